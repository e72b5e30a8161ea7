//! The hand-written ioctl numbers and the bindgen layouts against a C compiler's view of
//! the vendored header.

use std::process::Command;

use super::bindings::*;
use super::ioctl;

/// Compiles and runs a C program that includes the vendored `<linux/vfio.h>`; `None`
/// when there is no C compiler (the check is then skipped with a message).
fn c_output(body: &str) -> Option<String> {
    let dir =
        std::env::temp_dir().join(format!("ferrox-vfio-{}-{}", std::process::id(), body.len()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("probe.c");
    let exe = dir.join("probe");
    std::fs::write(&src, format!("#include <stdio.h>\n#include <stddef.h>\n#include <linux/vfio.h>\nint main(void) {{\n{body}\nreturn 0;\n}}\n")).unwrap();
    let include = concat!(env!("CARGO_MANIFEST_DIR"), "/../vendor/linux-uapi/include");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .arg(format!("-I{include}"))
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .status();
    match status {
        Ok(s) if s.success() => {}
        other => {
            eprintln!("skipping: cannot compile with {cc}: {other:?}");
            return None;
        }
    }
    let out = Command::new(&exe).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    Some(String::from_utf8(out.stdout).unwrap())
}

#[test]
fn ioctl_numbers_match_the_header() {
    let body: String = ioctl::ALL
        .iter()
        .map(|(name, _)| format!("printf(\"{name} %lu\\n\", (unsigned long){name});\n"))
        .collect();
    let Some(out) = c_output(&body) else { return };
    let mut seen = 0;
    for line in out.lines() {
        let (name, value) = line.split_once(' ').unwrap();
        let ours = ioctl::ALL.iter().find(|(n, _)| *n == name).unwrap().1;
        assert_eq!(ours, value.parse::<libc::c_ulong>().unwrap(), "{name}");
        seen += 1;
    }
    assert_eq!(seen, ioctl::ALL.len());
    // And the value the Python proof uses.
    assert_eq!(ioctl::VFIO_IOMMU_MAP_DMA, 0x3B71);
}

#[test]
fn struct_layouts_match_the_header() {
    let structs = [
        ("vfio_group_status", size_of::<vfio_group_status>()),
        ("vfio_device_info", size_of::<vfio_device_info>()),
        ("vfio_region_info", size_of::<vfio_region_info>()),
        ("vfio_irq_info", size_of::<vfio_irq_info>()),
        ("vfio_irq_set", size_of::<vfio_irq_set>()),
        (
            "vfio_iommu_type1_dma_map",
            size_of::<vfio_iommu_type1_dma_map>(),
        ),
        (
            "vfio_iommu_type1_dma_unmap",
            size_of::<vfio_iommu_type1_dma_unmap>(),
        ),
    ];
    let mut body: String = structs
        .iter()
        .map(|(n, _)| format!("printf(\"{n} %zu\\n\", sizeof(struct {n}));\n"))
        .collect();
    body.push_str("printf(\"offset %zu %zu %zu\\n\", offsetof(struct vfio_region_info, offset), offsetof(struct vfio_iommu_type1_dma_map, iova), offsetof(struct vfio_irq_set, data));\n");
    let Some(out) = c_output(&body) else { return };
    for line in out.lines() {
        let mut f = line.split(' ');
        let name = f.next().unwrap();
        if name == "offset" {
            let v: Vec<usize> = f.map(|x| x.parse().unwrap()).collect();
            assert_eq!(
                v,
                [
                    std::mem::offset_of!(vfio_region_info, offset),
                    std::mem::offset_of!(vfio_iommu_type1_dma_map, iova),
                    std::mem::offset_of!(vfio_irq_set, data)
                ]
            );
            continue;
        }
        let size: usize = f.next().unwrap().parse().unwrap();
        let ours = structs.iter().find(|(n, _)| *n == name).unwrap().1;
        assert_eq!(ours, size, "sizeof(struct {name})");
    }
}

#[test]
fn opening_a_missing_device_says_what_to_do() {
    let e = super::VfioDevice::open("0000:ff:1f.7")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no such PCI device") && e.contains("hint: "),
        "{e}"
    );
}
