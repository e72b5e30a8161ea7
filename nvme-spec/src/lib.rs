//! NVMe base specification 2.0 and NVMe over Fabrics types: the byte-exact vocabulary
//! every Ferrox crate speaks when it talks NVMe.
//!
//! # Architecture
//!
//! This crate is plain data plus the arithmetic to pick fields out of it. It holds no
//! state, performs no I/O, allocates nothing, spawns nothing and forbids unsafe code;
//! it is `no_std` (only `core`, `bitflags`, `zerocopy` and `thiserror`), so the NVMe/TCP
//! target and host (`ferrox-nvmeof`), the PCIe driver (`ferrox-nvme`) and the fuzz
//! targets share it without linking a driver, a reactor or a block device.
//!
//! - The wire and data structures: the 64-byte submission queue entry ([`Command`]),
//!   the 16-byte completion queue entry ([`Completion`]), status codes ([`Status`]),
//!   opcodes, the Fabrics Connect/Property commands, Identify data structures, log
//!   pages, features, Dataset Management ranges, the discovery log and NQN validation.
//! - The controller registers, defined once for both transports: their fields ([`Cap`],
//!   [`Vs`], [`Cc`], [`Csts`], [`Aqa`]) and their offsets ([`PropertyOffset`] for a
//!   Fabrics Property Get/Set, the [`register`] map of a PCIe controller's BAR0 with its
//!   doorbells), used by the PCIe driver and by its emulated controller alike.
//! - Every structure that crosses the wire is `#[repr(C)]`, derives zerocopy's
//!   `FromBytes`/`IntoBytes`/`Immutable`/`KnownLayout`, and has its size (and, for the
//!   big ones, key field offsets) checked at compile time against the specification.
//! - Multi-byte fields are stored as native `u16`/`u32`/`u64`, which equal the
//!   little-endian wire format on the only targets we build for (a big-endian build is a
//!   compile error). Fields that the specification places at unaligned offsets or that are
//!   128 bits wide are stored as byte arrays with typed getters and setters.
//! - Opcodes, status codes, identifiers and the like are *open* newtypes
//!   (`pub struct AdminOpcode(pub u8)` with associated constants), so an unknown value
//!   from a host parses and can be answered with a spec status instead of a panic.
//! - "Zero-based" counts (NLB, NUMD, SQSIZE, NSQR...) are returned raw, exactly as on the
//!   wire; helpers that return one-based counts say so in their name (`block_count`,
//!   `num_bytes`).
//!
//! Every submodule except [`register`] is re-exported at the root, so
//! `ferrox_nvme_spec::Command` and `ferrox_nvme_spec::command::Command` name the same
//! type (and the driver re-exports the crate as `ferrox_nvme::spec`).
//!
//! # What it doesn't implement
//!
//! - No I/O, queues, timers or transport of any kind: the PCIe driver lives in
//!   `ferrox-nvme`, NVMe/TCP in `ferrox-nvmeof`.
//! - No controller memory buffer, persistent memory region, boot-partition, interrupt
//!   mask or subsystem-reset register wrappers (their offsets are named, their fields
//!   are not).
//! - No PRP lists, keyed SGL data blocks (RDMA) or SGL segment chains: only the single
//!   16-byte SGL descriptor NVMe/TCP puts in SGL1 (PRP entries are plain `u64`s in
//!   [`Command::dptr`]).
//! - No Zoned Namespace, Key Value, reservation, directive, sanitize, telemetry or
//!   persistent-event-log structures; DH-HMAC-CHAP authentication payloads are not modelled
//!   (the AUTHREQ bits of the Connect response are).
//! - No validation of command semantics (whether an LBA range fits a namespace, whether a
//!   feature may be set): that is the target's job, which answers with a [`Status`].
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(target_endian = "big")]
compile_error!("ferrox-nvme-spec stores little-endian wire fields as native integers; big-endian targets are not supported");

/// Defines an open newtype over an integer with named associated constants and a `Debug`
/// that prints the constant's name when the value is known.
macro_rules! open_enum {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident($ty:ty) {
            $(
                $(#[$cmeta:meta])*
                $const:ident = $value:literal,
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(
            Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default,
            zerocopy::FromBytes, zerocopy::IntoBytes, zerocopy::Immutable, zerocopy::KnownLayout,
        )]
        #[repr(transparent)]
        $vis struct $name(pub $ty);

        impl $name {
            $(
                $(#[$cmeta])*
                pub const $const: Self = Self($value);
            )*

            /// The constant's name, if this value has one.
            #[must_use]
            pub const fn name(self) -> Option<&'static str> {
                match self.0 {
                    $( $value => Some(stringify!($const)), )*
                    _ => None,
                }
            }
        }

        impl From<$ty> for $name {
            fn from(value: $ty) -> Self {
                Self(value)
            }
        }

        impl From<$name> for $ty {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                match self.name() {
                    Some(name) => f.write_str(name),
                    None => write!(f, "{}({:#x})", stringify!($name), self.0),
                }
            }
        }
    };
}

/// Generates a getter and a setter per bit field of a register-like newtype over an
/// unsigned integer. `name / set_name: type @ low_bit, width;` — a `bool` field must have
/// width 1.
macro_rules! bit_fields {
    (@get bool, $bits:expr) => { $bits != 0 };
    (@get $ft:ty, $bits:expr) => { $bits as $ft };
    (
        $name:ident: $raw:ty {
            $(
                $(#[$fmeta:meta])*
                $get:ident / $set:ident : $ft:tt @ $lo:literal, $width:literal;
            )*
        }
    ) => {
        impl $name {
            $(
                $(#[$fmeta])*
                #[must_use]
                pub const fn $get(self) -> $ft {
                    let mask: $raw = ((1 as $raw) << $width) - 1;
                    bit_fields!(@get $ft, (self.0 >> $lo) & mask)
                }

                #[doc = concat!("Sets the field read by [`Self::", stringify!($get), "`]; excess high bits are dropped.")]
                pub const fn $set(&mut self, value: $ft) {
                    let mask: $raw = (((1 as $raw) << $width) - 1) << $lo;
                    self.0 = (self.0 & !mask) | (((value as $raw) << $lo) & mask);
                }
            )*
        }
    };
}

pub mod command;
pub mod completion;
pub mod discovery;
pub mod dsm;
pub mod fabrics;
pub mod features;
pub mod identify;
pub mod identify_ctrl;
pub mod log;
pub mod nqn;
pub mod opcode;
pub mod property;
pub mod register;
pub mod status;
pub mod text;

pub use command::*;
pub use completion::*;
pub use discovery::*;
pub use dsm::*;
pub use fabrics::*;
pub use features::*;
pub use identify::*;
pub use identify_ctrl::*;
pub use log::*;
pub use nqn::*;
pub use opcode::*;
pub use property::*;
pub use status::*;
pub use text::*;

/// The broadcast namespace identifier ("all namespaces").
pub const NSID_ALL: u32 = 0xFFFF_FFFF;
