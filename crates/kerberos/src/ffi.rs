//! `gss_acquire_cred_from`, which libgssapi does not wrap: credentials from a named
//! keytab and credential cache for this call only, instead of the process-wide
//! `KRB5_CLIENT_KTNAME` / `KRB5CCNAME` (which would leak into every other GSSAPI user in
//! the process and into children).

use libgssapi::credential::{Cred, CredUsage};
use libgssapi::error::{Error, MajorFlags};
use libgssapi::oid::GSS_NT_KRB5_PRINCIPAL;
use libgssapi_sys::{
    GSS_C_ACCEPT, GSS_C_INITIATE, GSS_S_COMPLETE, OM_uint32, gss_OID_desc, gss_OID_set,
    gss_acquire_cred_from, gss_buffer_desc, gss_cred_id_t, gss_import_name,
    gss_key_value_element_desc, gss_key_value_set_desc, gss_name_t, gss_release_name,
};
use std::ffi::CString;
use std::ptr;

/// An imported name, released on drop.
struct ImportedName(gss_name_t);

impl Drop for ImportedName {
    fn drop(&mut self) {
        if !self.0.is_null() {
            let mut minor = 0;
            // SAFETY: self.0 came from gss_import_name and is released once, here.
            unsafe { gss_release_name(&mut minor, &mut self.0) };
        }
    }
}

fn failed(major: OM_uint32, minor: OM_uint32) -> Error {
    Error {
        major: MajorFlags::from_bits_retain(major),
        minor,
    }
}

fn import_principal(principal: &str) -> Result<ImportedName, Error> {
    let mut minor = 0;
    let mut name: gss_name_t = ptr::null_mut();
    let mut buffer = gss_buffer_desc {
        length: principal.len(),
        value: principal.as_ptr() as *mut _,
    };
    let oid_bytes: &'static [u8] = &GSS_NT_KRB5_PRINCIPAL;
    let mut oid = gss_OID_desc {
        length: oid_bytes.len() as OM_uint32,
        elements: oid_bytes.as_ptr() as *mut _,
    };
    // SAFETY: the buffer points at `principal` and the OID at static bytes, both alive
    // for the call; gss_import_name copies what it keeps and writes neither.
    let major = unsafe { gss_import_name(&mut minor, &mut buffer, &mut oid, &mut name) };
    if major != GSS_S_COMPLETE {
        return Err(failed(major, minor));
    }
    Ok(ImportedName(name))
}

/// Acquire a credential for `principal` (or the store's default) from `store`'s
/// key/value pairs (`client_keytab`, `ccache`, `keytab`: MIT's credential store keys).
pub fn acquire_cred_from(
    principal: Option<&str>,
    usage: CredUsage,
    store: &[(&str, String)],
) -> Result<Cred, Error> {
    let name = principal.map(import_principal).transpose()?;
    let strings: Vec<(CString, CString)> = store
        .iter()
        .map(|(k, v)| {
            let c =
                |s: &str| CString::new(s).map_err(|_| failed(libgssapi_sys::_GSS_S_BAD_NAME, 0));
            Ok((c(k)?, c(v)?))
        })
        .collect::<Result<_, Error>>()?;
    let mut elements: Vec<gss_key_value_element_desc> = strings
        .iter()
        .map(|(k, v)| gss_key_value_element_desc {
            key: k.as_ptr(),
            value: v.as_ptr(),
        })
        .collect();
    let set = gss_key_value_set_desc {
        count: elements.len() as OM_uint32,
        elements: elements.as_mut_ptr(),
    };
    let usage = match usage {
        CredUsage::Initiate => GSS_C_INITIATE,
        CredUsage::Accept => GSS_C_ACCEPT,
        CredUsage::Both => libgssapi_sys::GSS_C_BOTH,
    };
    let mut minor = 0;
    let mut cred: gss_cred_id_t = ptr::null_mut();
    // SAFETY: every pointer passed lives until the call returns (`strings` and `elements`
    // outlive it; the name is released after). The library copies what it keeps. On
    // success `cred` is a new handle whose sole owner becomes the returned `Cred`.
    let major = unsafe {
        gss_acquire_cred_from(
            &mut minor,
            name.as_ref().map_or(ptr::null_mut(), |n| n.0),
            0xffff_ffff, // GSS_C_INDEFINITE
            ptr::null_mut::<gss_OID_desc>() as gss_OID_set,
            usage as _,
            &set,
            &mut cred,
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    if major != GSS_S_COMPLETE {
        return Err(failed(major, minor));
    }
    // SAFETY: `cred` was just created for us and nothing else holds it.
    Ok(unsafe { Cred::from_c(cred) })
}
