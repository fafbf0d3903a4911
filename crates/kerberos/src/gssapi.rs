//! MIT krb5's GSSAPI (RFC 2744's C binding), loaded at run time.
//!
//! Why loaded and not linked: building credkeeper needs no Kerberos headers, libclang or
//! bindgen, and a process that never touches Kerberos (`--version`, a `get` with a robot
//! secret, the registry helper) never maps the seven libraries behind
//! `libgssapi_krb5.so.2`. The library is opened on the first call that needs it; when it
//! is missing, that call fails with [`GssError::Unavailable`] and nothing else changes.
//!
//! The surface is exactly what the crate uses: names (import, canonicalize, display),
//! credentials from a named credential store, and the two sides of a security context.
//! Every handle has one owner that releases it on drop. The declarations follow MIT's
//! `gssapi/gssapi.h` and `gssapi/gssapi_ext.h` (LP64: `size_t` lengths in buffers,
//! `OM_uint32` in OIDs and key/value sets).

use std::ffi::{CString, c_char, c_int, c_void};
use std::ptr;
use std::sync::{Arc, OnceLock};

/// The soname MIT krb5 has used since 1.x; `CREDKEEPER_GSSAPI_LIBRARY` names another file
/// (another path, or a test's missing one).
const LIBRARY: &str = "libgssapi_krb5.so.2";
const LIBRARY_ENV: &str = "CREDKEEPER_GSSAPI_LIBRARY";

type Status = u32;
type RawName = *mut c_void;
type RawCred = *mut c_void;
type RawCtx = *mut c_void;

const CONTINUE_NEEDED: Status = 1;
/// Calling and routine errors live in the high 16 bits; the low ones are informational.
const ERROR_MASK: Status = 0xffff_0000;
const BAD_NAME: Status = 2 << 16;
const INDEFINITE: Status = 0xffff_ffff;
const GSS_CODE: c_int = 1;
const MECH_CODE: c_int = 2;
pub const MUTUAL_FLAG: Status = 2;

#[repr(C)]
struct Buffer {
    length: usize,
    value: *mut c_void,
}

impl Buffer {
    fn empty() -> Buffer {
        Buffer {
            length: 0,
            value: ptr::null_mut(),
        }
    }

    fn borrowing(bytes: &[u8]) -> Buffer {
        Buffer {
            length: bytes.len(),
            // GSSAPI takes input buffers as non-const but never writes them.
            value: bytes.as_ptr() as *mut c_void,
        }
    }
}

#[repr(C)]
pub struct OidDesc {
    length: u32,
    elements: *const c_void,
}

/// An object identifier as GSSAPI takes it: the DER contents of the OID, without tag and
/// length.
pub struct Oid(&'static [u8]);

impl Oid {
    fn desc(&self) -> OidDesc {
        OidDesc {
            length: self.0.len() as u32,
            elements: self.0.as_ptr().cast(),
        }
    }
}

/// 1.2.840.113554.1.2.2 (RFC 1964).
pub const MECH_KRB5: Oid = Oid(b"\x2a\x86\x48\x86\xf7\x12\x01\x02\x02");
/// 1.3.6.1.5.5.2 (RFC 4178).
pub const MECH_SPNEGO: Oid = Oid(b"\x2b\x06\x01\x05\x05\x02");
/// 1.2.840.113554.1.2.1.4: `service@host`.
pub const NT_HOSTBASED_SERVICE: Oid = Oid(b"\x2a\x86\x48\x86\xf7\x12\x01\x02\x01\x04");
/// 1.2.840.113554.1.2.2.1: `primary/instance@REALM`.
pub const NT_KRB5_PRINCIPAL: Oid = Oid(b"\x2a\x86\x48\x86\xf7\x12\x01\x02\x02\x01");

#[repr(C)]
struct KeyValue {
    key: *const c_char,
    value: *const c_char,
}

#[repr(C)]
struct KeyValueSet {
    count: u32,
    elements: *const KeyValue,
}

/// Why a GSSAPI call failed.
#[derive(Debug, Clone)]
pub enum GssError {
    /// The library could not be opened (or lacks a function this crate calls).
    Unavailable { library: String, reason: String },
    /// The library answered with an error: its own words for the major and minor status.
    Failed { message: String },
}

/// The functions called, resolved once from the library.
struct Api {
    import_name:
        unsafe extern "C" fn(*mut Status, *const Buffer, *const OidDesc, *mut RawName) -> Status,
    canonicalize_name:
        unsafe extern "C" fn(*mut Status, RawName, *const OidDesc, *mut RawName) -> Status,
    display_name:
        unsafe extern "C" fn(*mut Status, RawName, *mut Buffer, *mut *const OidDesc) -> Status,
    release_name: unsafe extern "C" fn(*mut Status, *mut RawName) -> Status,
    release_buffer: unsafe extern "C" fn(*mut Status, *mut Buffer) -> Status,
    #[allow(clippy::type_complexity)]
    acquire_cred_from: unsafe extern "C" fn(
        *mut Status,
        RawName,
        Status,
        *const c_void,
        c_int,
        *const KeyValueSet,
        *mut RawCred,
        *mut c_void,
        *mut Status,
    ) -> Status,
    inquire_cred: unsafe extern "C" fn(
        *mut Status,
        RawCred,
        *mut RawName,
        *mut Status,
        *mut c_int,
        *mut c_void,
    ) -> Status,
    release_cred: unsafe extern "C" fn(*mut Status, *mut RawCred) -> Status,
    #[allow(clippy::type_complexity)]
    init_sec_context: unsafe extern "C" fn(
        *mut Status,
        RawCred,
        *mut RawCtx,
        RawName,
        *const OidDesc,
        Status,
        Status,
        *const c_void,
        *const Buffer,
        *mut *const OidDesc,
        *mut Buffer,
        *mut Status,
        *mut Status,
    ) -> Status,
    #[allow(clippy::type_complexity)]
    accept_sec_context: unsafe extern "C" fn(
        *mut Status,
        *mut RawCtx,
        RawCred,
        *const Buffer,
        *const c_void,
        *mut RawName,
        *mut *const OidDesc,
        *mut Buffer,
        *mut Status,
        *mut Status,
        *mut RawCred,
    ) -> Status,
    delete_sec_context: unsafe extern "C" fn(*mut Status, *mut RawCtx, *mut Buffer) -> Status,
    #[allow(clippy::type_complexity)]
    display_status: unsafe extern "C" fn(
        *mut Status,
        Status,
        c_int,
        *const OidDesc,
        *mut Status,
        *mut Buffer,
    ) -> Status,
    /// Kept open for the life of the process: the function pointers above point into it.
    _library: libloading::Library,
}

static API: OnceLock<Result<Api, GssError>> = OnceLock::new();

fn api() -> Result<&'static Api, GssError> {
    API.get_or_init(load).as_ref().map_err(Clone::clone)
}

fn load() -> Result<Api, GssError> {
    let library = std::env::var(LIBRARY_ENV).unwrap_or_else(|_| LIBRARY.to_string());
    let unavailable = |reason: String| GssError::Unavailable {
        library: library.clone(),
        reason,
    };
    // SAFETY: opening MIT krb5 runs its initialisers, which only set up its own state
    // (error tables, mutexes); it has no constructor that touches the caller's.
    let lib =
        unsafe { libloading::Library::new(&library) }.map_err(|e| unavailable(e.to_string()))?;
    macro_rules! function {
        ($name:literal) => {
            // SAFETY: each symbol is looked up under its C name and given the signature
            // that MIT's gssapi.h declares for it (the field's type above).
            *unsafe { lib.get(concat!($name, "\0").as_bytes()) }
                .map_err(|e| unavailable(format!("{}: {e}", $name)))?
        };
    }
    Ok(Api {
        import_name: function!("gss_import_name"),
        canonicalize_name: function!("gss_canonicalize_name"),
        display_name: function!("gss_display_name"),
        release_name: function!("gss_release_name"),
        release_buffer: function!("gss_release_buffer"),
        acquire_cred_from: function!("gss_acquire_cred_from"),
        inquire_cred: function!("gss_inquire_cred"),
        release_cred: function!("gss_release_cred"),
        init_sec_context: function!("gss_init_sec_context"),
        accept_sec_context: function!("gss_accept_sec_context"),
        delete_sec_context: function!("gss_delete_sec_context"),
        display_status: function!("gss_display_status"),
        _library: lib,
    })
}

impl Api {
    /// The library's text for a failed call: every message of the major status, then
    /// every message of the mechanism's minor status (where MIT names the Kerberos error).
    fn failure(&self, major: Status, minor: Status) -> GssError {
        let mut parts = self.status_messages(major, GSS_CODE);
        if minor != 0 {
            parts.extend(self.status_messages(minor, MECH_CODE));
        }
        GssError::Failed {
            message: parts.join(": "),
        }
    }

    fn status_messages(&self, status: Status, kind: c_int) -> Vec<String> {
        let mut messages = Vec::new();
        let mut context: Status = 0;
        // A status has a handful of messages; the bound keeps a misbehaving library from
        // looping us forever.
        for _ in 0..8 {
            let mut minor = 0;
            let mut text = Buffer::empty();
            // SAFETY: `text` is an output buffer the library fills and we release below;
            // the OID may be null (the default mechanism).
            let major = unsafe {
                (self.display_status)(
                    &mut minor,
                    status,
                    kind,
                    ptr::null(),
                    &mut context,
                    &mut text,
                )
            };
            if major & ERROR_MASK != 0 {
                break;
            }
            messages.push(String::from_utf8_lossy(&self.take_buffer(&mut text)).into_owned());
            if context == 0 {
                break;
            }
        }
        messages
    }

    /// Copy a buffer the library allocated, then release it.
    fn take_buffer(&self, buffer: &mut Buffer) -> Vec<u8> {
        let bytes = if buffer.value.is_null() || buffer.length == 0 {
            Vec::new()
        } else {
            // SAFETY: the library filled `buffer` with `length` bytes at `value`.
            unsafe { std::slice::from_raw_parts(buffer.value as *const u8, buffer.length) }.to_vec()
        };
        let mut minor = 0;
        // SAFETY: `buffer` came from the library and is released once, here.
        unsafe { (self.release_buffer)(&mut minor, buffer) };
        bytes
    }

    fn check(&self, major: Status, minor: Status) -> Result<Status, GssError> {
        if major & ERROR_MASK != 0 {
            Err(self.failure(major, minor))
        } else {
            Ok(major)
        }
    }
}

/// A GSSAPI name, released on drop.
pub struct Name {
    api: &'static Api,
    raw: RawName,
}

// SAFETY: an MIT name is immutable once made and not tied to the thread that made it; it
// is owned here alone, so moving it to another thread moves its only user.
unsafe impl Send for Name {}

impl Drop for Name {
    fn drop(&mut self) {
        let mut minor = 0;
        // SAFETY: `raw` came from the library, is owned by this value alone and is
        // released once.
        unsafe { (self.api.release_name)(&mut minor, &mut self.raw) };
    }
}

impl Name {
    pub fn import(text: &str, kind: &Oid) -> Result<Name, GssError> {
        let api = api()?;
        let buffer = Buffer::borrowing(text.as_bytes());
        let oid = kind.desc();
        let (mut minor, mut raw) = (0, ptr::null_mut());
        // SAFETY: the buffer and OID point at memory alive for the call; the library
        // copies what it keeps and writes only `minor` and `raw`.
        let major = unsafe { (api.import_name)(&mut minor, &buffer, &oid, &mut raw) };
        api.check(major, minor)?;
        Ok(Name { api, raw })
    }

    /// The mechanism name: for Kerberos, the principal with its realm filled in.
    pub fn canonicalize(&self, mech: &Oid) -> Result<Name, GssError> {
        let oid = mech.desc();
        let (mut minor, mut raw) = (0, ptr::null_mut());
        // SAFETY: `self.raw` is a live name; the output is a new name we then own.
        let major = unsafe { (self.api.canonicalize_name)(&mut minor, self.raw, &oid, &mut raw) };
        self.api.check(major, minor)?;
        Ok(Name { api: self.api, raw })
    }

    pub fn display(&self) -> Result<String, GssError> {
        let (mut minor, mut text) = (0, Buffer::empty());
        // SAFETY: `self.raw` is a live name; `text` is filled by the library and
        // released by take_buffer; the name type may be left unread (null).
        let major =
            unsafe { (self.api.display_name)(&mut minor, self.raw, &mut text, ptr::null_mut()) };
        self.api.check(major, minor)?;
        Ok(String::from_utf8_lossy(&self.api.take_buffer(&mut text)).into_owned())
    }
}

/// Whether a credential starts or accepts contexts.
#[derive(Clone, Copy)]
pub enum Usage {
    Initiate,
    Accept,
}

struct CredHandle {
    api: &'static Api,
    raw: RawCred,
}

// SAFETY: MIT krb5 credential handles may be used from any thread and concurrently by
// several contexts (its cred structure is protected by its own mutex); the handle is only
// released when the last owner drops it.
unsafe impl Send for CredHandle {}
// SAFETY: as above; nothing here mutates the handle except its release in Drop.
unsafe impl Sync for CredHandle {}

impl Drop for CredHandle {
    fn drop(&mut self) {
        let mut minor = 0;
        // SAFETY: the last owner releases the handle once.
        unsafe { (self.api.release_cred)(&mut minor, &mut self.raw) };
    }
}

/// A credential, shared by the contexts started from it.
#[derive(Clone)]
pub struct Cred(Arc<CredHandle>);

impl Cred {
    /// `gss_acquire_cred_from`: the credential of `principal` (or the store's default)
    /// from `store`'s key/value pairs (`client_keytab`, `ccache`, `keytab`: MIT's
    /// credential store keys), for this call only instead of the process-wide
    /// `KRB5_CLIENT_KTNAME` / `KRB5CCNAME`, which would leak into children.
    pub fn acquire_from(
        principal: Option<&str>,
        usage: Usage,
        store: &[(&str, String)],
    ) -> Result<Cred, GssError> {
        let api = api()?;
        let name = principal
            .map(|p| Name::import(p, &NT_KRB5_PRINCIPAL))
            .transpose()?;
        let strings = store
            .iter()
            .map(|(k, v)| Ok((CString::new(*k)?, CString::new(v.as_str())?)))
            .collect::<Result<Vec<_>, std::ffi::NulError>>()
            .map_err(|_| api.failure(BAD_NAME, 0))?;
        let elements: Vec<KeyValue> = strings
            .iter()
            .map(|(k, v)| KeyValue {
                key: k.as_ptr(),
                value: v.as_ptr(),
            })
            .collect();
        let set = KeyValueSet {
            count: elements.len() as u32,
            elements: elements.as_ptr(),
        };
        let usage: c_int = match usage {
            Usage::Initiate => 1,
            Usage::Accept => 2,
        };
        let (mut minor, mut raw) = (0, ptr::null_mut());
        // SAFETY: every pointer passed (`set`, its strings, the name) lives until the call
        // returns; the library copies what it keeps. Null mechs means the default set;
        // null outputs are not asked for. On success `raw` is a new handle we own.
        let major = unsafe {
            (api.acquire_cred_from)(
                &mut minor,
                name.as_ref().map_or(ptr::null_mut(), |n| n.raw),
                INDEFINITE,
                ptr::null(),
                usage,
                &set,
                &mut raw,
                ptr::null_mut(),
                ptr::null_mut(),
            )
        };
        api.check(major, minor)?;
        Ok(Cred(Arc::new(CredHandle { api, raw })))
    }

    /// The principal the credential speaks for.
    pub fn name(&self) -> Result<Name, GssError> {
        let api = self.0.api;
        let (mut minor, mut raw) = (0, ptr::null_mut());
        // SAFETY: the handle is live; only the name is asked for (a new name we own).
        let major = unsafe {
            (api.inquire_cred)(
                &mut minor,
                self.0.raw,
                &mut raw,
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null_mut(),
            )
        };
        api.check(major, minor)?;
        Ok(Name { api, raw })
    }
}

/// A security context, deleted on drop.
struct Context {
    api: &'static Api,
    raw: RawCtx,
    complete: bool,
}

// SAFETY: a context is used by one thread at a time (every step takes `&mut self`); MIT
// contexts carry no thread affinity.
unsafe impl Send for Context {}

impl Drop for Context {
    fn drop(&mut self) {
        if !self.raw.is_null() {
            let mut minor = 0;
            // SAFETY: the context is ours and deleted once; no output token is wanted.
            unsafe { (self.api.delete_sec_context)(&mut minor, &mut self.raw, ptr::null_mut()) };
        }
    }
}

impl Context {
    /// The token a step produced, if any, after the call's status was checked.
    fn output(
        &mut self,
        major: Status,
        minor: Status,
        out: &mut Buffer,
    ) -> Result<Option<Vec<u8>>, GssError> {
        let token = self.api.take_buffer(out);
        let major = self.api.check(major, minor)?;
        self.complete = major & CONTINUE_NEEDED == 0;
        Ok(Some(token).filter(|t| !t.is_empty()))
    }
}

/// The initiator's side of a context.
pub struct ClientCtx {
    ctx: Context,
    cred: Cred,
    target: Name,
    mech: &'static Oid,
    flags: Status,
}

impl ClientCtx {
    pub fn new(cred: Cred, target: Name, flags: Status, mech: &'static Oid) -> ClientCtx {
        ClientCtx {
            ctx: Context {
                api: cred.0.api,
                raw: ptr::null_mut(),
                complete: false,
            },
            cred,
            target,
            mech,
            flags,
        }
    }

    /// One `gss_init_sec_context` round: the token to send, if any.
    pub fn step(&mut self, input: Option<&[u8]>) -> Result<Option<Vec<u8>>, GssError> {
        let api = self.ctx.api;
        let input = input.map(Buffer::borrowing);
        let mech = self.mech.desc();
        let (mut minor, mut out) = (0, Buffer::empty());
        // SAFETY: the credential, target name and context are live handles we own; the
        // input buffer and OID point at memory alive for the call; null channel
        // bindings, actual mech, flags and time are allowed. `out` is released in output().
        let major = unsafe {
            (api.init_sec_context)(
                &mut minor,
                self.cred.0.raw,
                &mut self.ctx.raw,
                self.target.raw,
                &mech,
                self.flags,
                0,
                ptr::null(),
                input.as_ref().map_or(ptr::null(), |b| b as *const Buffer),
                ptr::null_mut(),
                &mut out,
                ptr::null_mut(),
                ptr::null_mut(),
            )
        };
        self.ctx.output(major, minor, &mut out)
    }

    pub fn is_complete(&self) -> bool {
        self.ctx.complete
    }
}

/// The acceptor's side of a context.
pub struct ServerCtx {
    ctx: Context,
    cred: Cred,
    source: Option<Name>,
}

impl ServerCtx {
    pub fn new(cred: Cred) -> ServerCtx {
        ServerCtx {
            ctx: Context {
                api: cred.0.api,
                raw: ptr::null_mut(),
                complete: false,
            },
            cred,
            source: None,
        }
    }

    /// One `gss_accept_sec_context` round: the token to send back, if any.
    pub fn step(&mut self, token: &[u8]) -> Result<Option<Vec<u8>>, GssError> {
        let api = self.ctx.api;
        let input = Buffer::borrowing(token);
        let (mut minor, mut out, mut source) = (0, Buffer::empty(), ptr::null_mut());
        // SAFETY: the credential and context are live handles we own; `input` points at
        // `token`, alive for the call; null bindings, mech, flags, time and delegated
        // credential are allowed. `source` becomes a name we own; `out` is released in
        // output().
        let major = unsafe {
            (api.accept_sec_context)(
                &mut minor,
                &mut self.ctx.raw,
                self.cred.0.raw,
                &input,
                ptr::null(),
                &mut source,
                ptr::null_mut(),
                &mut out,
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null_mut(),
            )
        };
        if !source.is_null() {
            self.source = Some(Name { api, raw: source });
        }
        self.ctx.output(major, minor, &mut out)
    }

    pub fn is_complete(&self) -> bool {
        self.ctx.complete
    }

    /// The client's name, once the context is complete.
    pub fn source_name(&self) -> Option<&Name> {
        self.source.as_ref()
    }
}
