//! Devices and element types. Every tensor carries both; ops check them and name both operands
//! when they differ. The CPU backend is always there; GPUs (any that wgpu drives: Vulkan, Metal,
//! DX12, and Mesa's software Vulkan) come with the `gpu` feature.

use std::fmt;

/// Where a tensor's memory lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Device {
    /// Host memory, computed by the CPU backend (the default).
    #[default]
    Cpu,
    /// A GPU by its index in `strata devices`' list (`gpu:0` is the best adapter).
    Gpu(usize),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Gpu(i) => write!(f, "gpu:{i}"),
        }
    }
}

impl std::str::FromStr for Device {
    type Err = String;
    /// `cpu`, `gpu` (= `gpu:0`) or `gpu:N`.
    fn from_str(s: &str) -> std::result::Result<Device, String> {
        let bad =
            || format!("unknown device `{s}`: expected `cpu`, `gpu` or `gpu:N` (`strata devices` lists the GPUs)");
        match s.trim() {
            "cpu" => Ok(Device::Cpu),
            "gpu" => Ok(Device::Gpu(0)),
            other => other.strip_prefix("gpu:").and_then(|n| n.parse().ok()).map(Device::Gpu).ok_or_else(bad),
        }
    }
}

/// The element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit float: the working type for training and inference.
    F32,
    /// 64-bit float: gradient checks and reference computations.
    F64,
    /// 64-bit signed integer: class indices and `argmax` results (PyTorch's `long`).
    I64,
}

impl DType {
    /// Bytes per element.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 | DType::I64 => 8,
        }
    }

    /// Whether the type is a floating-point type (differentiable).
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64)
    }
}

impl Device {
    /// Whether this is a GPU.
    pub fn is_gpu(self) -> bool {
        matches!(self, Device::Gpu(_))
    }

    /// The memory this device has in all, in bytes, when it can be read: for the CPU, the
    /// machine's total memory (`MemTotal` of `/proc/meminfo` on Linux; `None` elsewhere). The
    /// shape check refuses models that could never fit in it before anything is allocated.
    pub fn total_memory(self) -> Option<u64> {
        match self {
            Device::Cpu => {
                let text = std::fs::read_to_string("/proc/meminfo").ok()?;
                let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
                let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
                kib.checked_mul(1024)
            }
            Device::Gpu(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_and_print_alike() {
        for text in ["cpu", "gpu:0", "gpu:3"] {
            assert_eq!(text.parse::<Device>().unwrap().to_string(), text);
        }
        assert_eq!("gpu".parse::<Device>(), Ok(Device::Gpu(0)));
        assert!("cuda".parse::<Device>().unwrap_err().contains("expected `cpu`, `gpu` or `gpu:N`"));
    }

    #[test]
    fn the_cpu_reports_its_memory_on_linux() {
        if cfg!(target_os = "linux") {
            let m = Device::Cpu.total_memory().expect("/proc/meminfo is readable");
            assert!(m > 64 << 20, "{m} bytes");
        }
    }
}
