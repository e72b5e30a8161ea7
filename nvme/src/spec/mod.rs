//! NVMe base 2.0 and NVMe-oF specification types.
//!
//! `no_std`-friendly: only `core` (and `bitflags`/`zerocopy`) is used here, and no
//! unsafe code.
//!
//! Every submodule is re-exported here, so `ferrox_nvme::spec::Command` and
//! `ferrox_nvme::spec::command::Command` name the same type.
//!
//! Conventions:
//! - Structures are `#[repr(C)]` and byte-exact; their sizes are asserted at compile time.
//! - Multi-byte integers are stored natively and are little-endian on the wire because the
//!   crate only builds for little-endian targets.
//! - "Zero-based" counts (NLB, NUMD, SQSIZE, NSQR...) are returned raw, exactly as on the
//!   wire; helpers that return one-based counts say so in their name (`block_count`,
//!   `num_bytes`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(target_endian = "big")]
compile_error!("ferrox-nvme stores little-endian wire fields as native integers; big-endian targets are not supported");

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
