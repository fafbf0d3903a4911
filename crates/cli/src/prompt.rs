//! The terminal side of an interactive login (code, QR code, spinner, browser), and a
//! secret typed without echo.

use credkeeper_oidc::DeviceAuthorization;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

pub struct Terminal {
    spinner: Mutex<Option<ProgressBar>>,
    open_browser: bool,
}

impl Terminal {
    pub fn new(open_browser: bool) -> Terminal {
        Terminal {
            spinner: Mutex::new(None),
            open_browser,
        }
    }

    fn spin(&self, message: String) {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(message);
        bar.enable_steady_tick(Duration::from_millis(120));
        *self.spinner.lock().unwrap_or_else(|p| p.into_inner()) = Some(bar);
    }
}

/// Erase a half-drawn spinner line before printing a final message.
pub fn clear_line() {
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[2K");
    }
}

/// Show a URL as a QR code on a terminal, for a phone to open.
pub fn show_link(url: &str) {
    if std::io::stderr().is_terminal()
        && let Some(code) = qr(url)
    {
        eprintln!("\n{code}");
    }
}

fn qr(text: &str) -> Option<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .build(),
    )
}

impl credkeeper_refresher::Prompt for Terminal {
    fn interactive(&self) -> bool {
        std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
    }

    fn device_code(&self, d: &DeviceAuthorization) {
        let complete = d.verification_uri_complete.as_deref();
        eprintln!("To log in, open {}", d.verification_uri);
        eprintln!("and enter the code: {}", d.user_code);
        if let Some(url) = complete {
            eprintln!("or open this link, which carries the code: {url}");
            show_link(url);
        }
        self.spin(format!(
            "Waiting for the login to be approved (the code expires in {} s)",
            d.expires_in
        ));
    }

    fn browser_url(&self, url: &str) {
        eprintln!("Log in in your browser:\n  {url}");
        if self.open_browser && webbrowser::open(url).is_ok() {
            eprintln!("(a browser window was opened)");
        }
        self.spin("Waiting for the browser to return".into());
    }

    fn login_finished(&self, ok: bool) {
        if let Some(bar) = self
            .spinner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            bar.finish_and_clear();
        }
        if ok {
            eprintln!("Login complete.");
        }
    }
}

/// A line typed on the terminal (standard input) without echo, after `prompt` on stderr.
pub fn read_hidden(prompt: &str) -> std::io::Result<String> {
    eprint!("{prompt}");
    let fd = libc::STDIN_FILENO;
    // SAFETY: termios is plain data; tcgetattr fills it for our own standard input.
    let mut mode: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: as above; `mode` is a valid, writable termios.
    if unsafe { libc::tcgetattr(fd, &mut mode) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let saved = mode;
    mode.c_lflag &= !libc::ECHO;
    mode.c_lflag |= libc::ECHONL;
    // SAFETY: sets our own terminal's mode from a termios tcgetattr gave; restored below.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &mode) };
    let mut line = String::new();
    let read = std::io::stdin().read_line(&mut line);
    // SAFETY: restores the mode saved above.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    read?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}
