//! Bounds on the work and memory one message may cost.

/// Limits applied while indexing a message. Every one is checked before the
/// work it bounds is done, so hostile input costs at most these amounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message accepted, header section and body together.
    pub max_message_size: usize,
    /// Longest physical line of the header section (folded lines count one by one).
    pub max_line_length: usize,
    /// Most header fields in one message.
    pub max_headers: usize,
    /// Most values one list header (Via, Contact, Route, ...) may carry.
    pub max_list_values: usize,
}

impl Limits {
    /// Defaults sized for carrier traffic: a UDP datagram's maximum, 8 KiB lines
    /// (long Identity and P- headers pass), 256 headers, 64 values per list.
    pub const DEFAULT: Limits = Limits {
        max_message_size: 65_535,
        max_line_length: 8_192,
        max_headers: 256,
        max_list_values: 64,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}
