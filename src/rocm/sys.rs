//! The HIP runtime, loaded at run time with `libloading`: the entry points this crate calls,
//! each returning the integer `hipError_t`, which [`Hip::check`] turns into an error carrying
//! `hipGetErrorName`. Only HIP 4.2-era entry points are used; ROCm 5, 6 and 7 all export them.
//!
//! Integer return codes (not a Rust enum) mean an error code added by a newer runtime is just a
//! number, never undefined behaviour.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::OnceLock;

/// A HIP stream (`hipStream_t`); null is the default stream.
pub type HipStream = *mut c_void;
pub(crate) type HipEvent = *mut c_void;
pub(crate) type HipModule = *mut c_void;
pub(crate) type HipFunction = *mut c_void;

pub(crate) const HIP_SUCCESS: c_int = 0;
pub(crate) const HIP_ERROR_NO_DEVICE: c_int = 100;
pub(crate) const MEMCPY_HOST_TO_DEVICE: c_int = 1;
pub(crate) const MEMCPY_DEVICE_TO_HOST: c_int = 2;
pub(crate) const MEMCPY_DEVICE_TO_DEVICE: c_int = 3;

/// `sizeof(hipDeviceProp_t)` of the HIP 4.2-5.x layout filled by the plain
/// `hipGetDeviceProperties` (kept by ROCm 6 and 7 for old binaries); the buffer handed over is
/// larger, in case a runtime writes more.
pub(crate) const DEVICE_PROP_BUFFER: usize = 4096;
/// Offset and size of `char gcnArchName[256]` in that struct.
pub(crate) const GCN_ARCH_NAME_OFFSET: usize = 396;
pub(crate) const GCN_ARCH_NAME_LEN: usize = 256;
/// Offset of `int multiProcessorCount` in that struct.
pub(crate) const MULTIPROCESSOR_COUNT_OFFSET: usize = 336;

/// What the crate reads from `hipGetDeviceProperties`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceProps {
    /// Marketing name, e.g. `AMD Instinct MI300X`.
    pub name: String,
    /// e.g. `gfx942:sramecc+:xnack-`.
    pub gcn_arch: String,
    /// Compute units.
    pub compute_units: u32,
}

/// Library names tried in order; then the same under `$ROCM_PATH/lib` and `/opt/rocm/lib`.
pub(crate) const LIBRARY_NAMES: &[&str] = &[
    "libamdhip64.so",
    "libamdhip64.so.7",
    "libamdhip64.so.6",
    "libamdhip64.so.5",
];

macro_rules! hip_api {
    ($( $name:ident : fn($($arg:ty),*) $(-> $ret:ty)?; )*) => {
        /// The loaded runtime: the library (kept alive for the process) and its entry points,
        /// named as in HIP.
        #[allow(non_snake_case)]
        pub(crate) struct Hip {
            _lib: libloading::Library,
            /// The file that was loaded.
            pub path: String,
            /// What `hipInit` said when it failed (machines without an AMD GPU).
            pub init_error: Option<String>,
            $( pub $name: unsafe extern "C" fn($($arg),*) $(-> $ret)?, )*
        }

        impl Hip {
            #[allow(non_snake_case)]
            fn load_from(path: &str) -> Result<Self, String> {
                // SAFETY: loading libamdhip64 runs its initialisers, which only set up the HIP
                // runtime's own state; the library is a well-known system library.
                let lib = unsafe { libloading::Library::new(path) }.map_err(|e| e.to_string())?;
                $(
                    // SAFETY: the symbol has this C signature in every HIP release since 4.2
                    // (checked against hip_runtime_api.h); the pointer is copied out and stays
                    // valid because `_lib` lives as long as `Self`, which is never dropped.
                    let $name = unsafe {
                        *lib.get::<unsafe extern "C" fn($($arg),*) $(-> $ret)?>(
                            concat!(stringify!($name), "\0").as_bytes(),
                        )
                        .map_err(|e| format!("{path}: missing {}: {e}", stringify!($name)))?
                    };
                )*
                Ok(Self { _lib: lib, path: path.to_string(), init_error: None, $( $name, )* })
            }
        }
    };
}

hip_api! {
    hipInit: fn(c_uint) -> c_int;
    hipGetErrorName: fn(c_int) -> *const c_char;
    hipRuntimeGetVersion: fn(*mut c_int) -> c_int;
    hipGetDeviceCount: fn(*mut c_int) -> c_int;
    hipSetDevice: fn(c_int) -> c_int;
    hipGetDeviceProperties: fn(*mut c_void, c_int) -> c_int;
    hipDeviceSynchronize: fn() -> c_int;
    hipMemGetInfo: fn(*mut usize, *mut usize) -> c_int;
    hipMalloc: fn(*mut *mut c_void, usize) -> c_int;
    hipFree: fn(*mut c_void) -> c_int;
    hipMemcpy: fn(*mut c_void, *const c_void, usize, c_int) -> c_int;
    hipMemcpyAsync: fn(*mut c_void, *const c_void, usize, c_int, HipStream) -> c_int;
    hipMemsetAsync: fn(*mut c_void, c_int, usize, HipStream) -> c_int;
    hipStreamCreate: fn(*mut HipStream) -> c_int;
    hipStreamDestroy: fn(HipStream) -> c_int;
    hipStreamSynchronize: fn(HipStream) -> c_int;
    hipEventCreate: fn(*mut HipEvent) -> c_int;
    hipEventDestroy: fn(HipEvent) -> c_int;
    hipEventRecord: fn(HipEvent, HipStream) -> c_int;
    hipEventSynchronize: fn(HipEvent) -> c_int;
    hipEventElapsedTime: fn(*mut f32, HipEvent, HipEvent) -> c_int;
    hipModuleLoadData: fn(*mut HipModule, *const c_void) -> c_int;
    hipModuleGetFunction: fn(*mut HipFunction, HipModule, *const c_char) -> c_int;
    hipModuleLaunchKernel: fn(
        HipFunction, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint,
        HipStream, *mut *mut c_void, *mut *mut c_void
    ) -> c_int;
}

// SAFETY: `Hip` holds a library handle and plain function pointers; the HIP runtime API is
// thread-safe (every call may come from any thread), so sharing them across threads is sound.
unsafe impl Send for Hip {}
// SAFETY: as above; nothing in `Hip` is mutated after loading.
unsafe impl Sync for Hip {}

impl Hip {
    /// The process-wide runtime, loaded and initialised on first use. The error says which
    /// files were tried and why each failed; it is computed once.
    pub fn get() -> Result<&'static Hip, String> {
        static HIP: OnceLock<Result<Hip, String>> = OnceLock::new();
        HIP.get_or_init(|| {
            let mut hip = Self::load()?;
            // SAFETY: hipInit takes flags that must be 0 and has no other preconditions.
            let rc = unsafe { (hip.hipInit)(0) };
            // Without an AMD GPU hipInit reports "no device" (100) or, in HIP 5.2, "invalid
            // device" (101). That is not a load failure: the device count says it later, and
            // the note goes into the "no device" message.
            if rc != HIP_SUCCESS {
                hip.init_error = Some(hip.describe("hipInit", rc));
            }
            Ok(hip)
        })
        .as_ref()
        .map_err(Clone::clone)
    }

    fn load() -> Result<Self, String> {
        let mut candidates: Vec<String> = LIBRARY_NAMES.iter().map(|s| s.to_string()).collect();
        let mut dirs = Vec::new();
        if let Some(r) = std::env::var_os("ROCM_PATH") {
            dirs.push(std::path::PathBuf::from(r).join("lib"));
        }
        dirs.push("/opt/rocm/lib".into());
        for d in dirs {
            for n in LIBRARY_NAMES {
                candidates.push(d.join(n).display().to_string());
            }
        }
        let mut errors = Vec::new();
        for c in &candidates {
            match Self::load_from(c) {
                Ok(h) => return Ok(h),
                Err(e) => errors.push(e),
            }
        }
        Err(format!(
            "the HIP runtime (libamdhip64) could not be loaded; install ROCm (or Debian's \
             libamdhip64-5) and make sure the library is on the loader path. Tried: {}",
            errors.join("; ")
        ))
    }

    /// `call failed: hipErrorName (code)`.
    pub fn describe(&self, call: &str, rc: c_int) -> String {
        // SAFETY: hipGetErrorName accepts any integer and returns a pointer to a static,
        // NUL-terminated string (or null in broken runtimes, handled below).
        let p = unsafe { (self.hipGetErrorName)(rc) };
        let name = if p.is_null() {
            "unknown error".to_string()
        } else {
            // SAFETY: non-null, NUL-terminated and static per the HIP documentation.
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        };
        format!("{call} failed: {name} ({rc})")
    }

    /// `Ok` for `hipSuccess`, else an error naming the call and the HIP error.
    pub fn check(&self, call: &str, rc: c_int) -> candle_core::Result<()> {
        if rc == HIP_SUCCESS {
            Ok(())
        } else {
            Err(candle_core::Error::Msg(format!(
                "candle-rmsnorm rocm: {}",
                self.describe(call, rc)
            ))
            .bt())
        }
    }

    /// The runtime version as HIP encodes it (major * 10_000_000 + minor * 100_000 + patch).
    pub fn runtime_version(&self) -> Option<i32> {
        let mut v: c_int = 0;
        // SAFETY: writes one int through a valid pointer.
        let rc = unsafe { (self.hipRuntimeGetVersion)(&mut v) };
        (rc == HIP_SUCCESS).then_some(v)
    }

    /// Number of visible AMD GPUs; "no device" is `Ok(0)`.
    pub fn device_count(&self) -> candle_core::Result<usize> {
        let mut n: c_int = 0;
        // SAFETY: writes one int through a valid pointer.
        let rc = unsafe { (self.hipGetDeviceCount)(&mut n) };
        if rc == HIP_ERROR_NO_DEVICE {
            return Ok(0);
        }
        self.check("hipGetDeviceCount", rc)?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Makes `ordinal` the calling thread's current device.
    pub fn set_device(&self, ordinal: usize) -> candle_core::Result<()> {
        let d = c_int::try_from(ordinal).map_err(|_| {
            candle_core::Error::Msg(format!(
                "candle-rmsnorm rocm: device {ordinal} out of range"
            ))
        })?;
        // SAFETY: hipSetDevice validates the ordinal and returns an error code for a bad one.
        self.check("hipSetDevice", unsafe { (self.hipSetDevice)(d) })
    }

    /// Name, `gcnArchName` (e.g. `gfx90a:sramecc+:xnack-`) and compute-unit count of a device.
    pub fn properties(&self, ordinal: usize) -> candle_core::Result<DeviceProps> {
        let d = c_int::try_from(ordinal).unwrap_or(c_int::MAX);
        let mut props = vec![0u8; DEVICE_PROP_BUFFER];
        // SAFETY: the buffer is larger than any hipDeviceProp_t layout the plain entry point
        // fills (792 bytes in HIP 4.2-7) and is zeroed, so the strings below are terminated.
        let rc = unsafe { (self.hipGetDeviceProperties)(props.as_mut_ptr().cast(), d) };
        self.check("hipGetDeviceProperties", rc)?;
        let text = |at: usize, len: usize| {
            let field = &props[at..at + len];
            let end = field.iter().position(|&c| c == 0).unwrap_or(field.len());
            String::from_utf8_lossy(&field[..end]).into_owned()
        };
        let int = |at: usize| {
            i32::from_le_bytes([props[at], props[at + 1], props[at + 2], props[at + 3]])
        };
        let gcn_arch = text(GCN_ARCH_NAME_OFFSET, GCN_ARCH_NAME_LEN);
        if !gcn_arch.starts_with("gfx") {
            return Err(candle_core::Error::Msg(format!(
                "candle-rmsnorm rocm: device {ordinal} reports gcnArchName {gcn_arch:?}, not a gfx \
                 architecture (unexpected hipDeviceProp_t layout in {})",
                self.path
            )));
        }
        let cus = int(MULTIPROCESSOR_COUNT_OFFSET);
        Ok(DeviceProps {
            name: text(0, 256),
            gcn_arch,
            // A value outside any real GPU means a layout surprise; the launch geometry only
            // uses it to size small grids, so 1 is a safe stand-in.
            compute_units: if (1..=65536).contains(&cus) {
                cus as u32
            } else {
                1
            },
        })
    }
}
