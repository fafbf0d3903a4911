//! The broker killed with SIGKILL at random moments while robots ask it for tokens, again
//! and again: after each restart it is ready, every robot still gets its tokens from every
//! provider, and its audit log holds only whole JSON lines.

mod common;
use common::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

const ROBOTS: [&str; 4] = ["r1", "r2", "r3", "r4"];

fn config(op: &Op, user: &User) -> std::path::PathBuf {
    let secret = user.secret_file("op-robot.secret", "robot-secret", 0o600);
    let mut text = format!(
        "[[provider]]\nname = \"op-cc\"\nissuer = \"{}\"\nclient_id = \"robot-client\"\n\
         client_secret_file = \"{}\"\n",
        op.issuer(),
        secret.display()
    );
    for robot in ROBOTS {
        text.push_str(&format!(
            "\n[[robot]]\nname = \"{robot}\"\nauth = {{ secret = true }}\n\
             providers = [\"local\", \"op-cc\"]\nscopes = [\"read:/data\", \"read\"]\n\
             audiences = [\"*\"]\n"
        ));
    }
    let path = user.path("chaos.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A small, seeded generator: the moments of each run are printed, to replay a failure.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn ask(broker_url: &str, robot: &str, secret: &str, body: &str) -> u16 {
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ])
        .args(["-u", &format!("{robot}:{secret}")])
        .args([
            "-H",
            "content-type: application/json",
            "--data-binary",
            body,
        ])
        .arg(format!("{broker_url}/api/v1/token"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
}

#[test]
fn a_broker_killed_at_random_under_load_comes_back_whole_every_time() {
    let op = Op::start();
    let user = User::new();
    let config = config(&op, &user);
    let state = user.path("state");
    robot_secrets(&user, &config, &state, &ROBOTS);
    let secrets: Vec<String> = ROBOTS
        .iter()
        .map(|r| read(&user.path(&format!("{r}.secret"))).trim().to_string())
        .collect();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("chaos seed {seed}");
    let mut rng = Rng(seed);
    let bodies = [
        r#"{"provider":"local","scopes":"read:/data","minsecs":1}"#,
        r#"{"provider":"op-cc","scopes":"read","minsecs":1}"#,
    ];
    for round in 0..8 {
        let mut broker = Broker::start(
            &user,
            &state,
            &["--insecure-loopback", "--config", config.to_str().unwrap()],
        );
        // Every robot gets its tokens from every provider, right after the restart.
        for (robot, secret) in ROBOTS.iter().zip(&secrets) {
            for body in bodies {
                assert_eq!(
                    ask(&broker.url, robot, secret, body),
                    200,
                    "round {round}: {robot} {body}"
                );
            }
        }
        assert_eq!(broker.http("GET", "/readyz", None, None).0, 200);
        // Load: four clients asking as fast as they can, then SIGKILL at a random moment.
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicUsize::new(0));
        let clients: Vec<_> = ROBOTS
            .iter()
            .zip(&secrets)
            .enumerate()
            .map(|(i, (robot, secret))| {
                let (url, robot, secret) = (broker.url.clone(), robot.to_string(), secret.clone());
                let (stop, served) = (stop.clone(), served.clone());
                std::thread::spawn(move || {
                    let mut n = i;
                    while !stop.load(Ordering::Relaxed) {
                        if ask(&url, &robot, &secret, bodies[n % 2]) == 200 {
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                        n += 1;
                    }
                })
            })
            .collect();
        let wait = 100 + rng.below(700);
        std::thread::sleep(Duration::from_millis(wait));
        broker.kill();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.join().unwrap();
        }
        eprintln!(
            "round {round}: killed after {wait} ms, {} tokens served",
            served.load(Ordering::Relaxed)
        );
        // Whatever was cut, the audit log holds whole JSON lines only.
        let audit = read(&state.join("audit.log"));
        for line in audit.lines() {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("round {round}: audit line {line:?}: {e}"));
        }
        assert!(
            audit.is_empty() || audit.ends_with('\n'),
            "round {round}: a torn last line"
        );
    }
    // And once more after the last kill.
    let broker = Broker::start(
        &user,
        &state,
        &["--insecure-loopback", "--config", config.to_str().unwrap()],
    );
    for (robot, secret) in ROBOTS.iter().zip(&secrets) {
        for body in bodies {
            assert_eq!(ask(&broker.url, robot, secret, body), 200, "{robot} {body}");
        }
    }
}
