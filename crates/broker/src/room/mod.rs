//! The room: its rules as plain, network-free types, and the components on
//! the bus that apply them.
//!
//! * [`admission`]: who enters, who waits (strict FIFO), who is turned away;
//! * [`delivery`]: the room's sequencer, fanning every event out to members;
//! * [`roster`]: who is in the room, for `who`;
//! * [`waitlist`]: queued clients' positions, conflated;
//! * [`names`]: the name rule and the claims that keep names unique.

pub mod admission;
pub mod delivery;
pub mod names;
pub mod roster;
pub mod waitlist;
