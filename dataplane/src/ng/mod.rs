//! The rtpengine-compatible "ng" control protocol: a cookie, a space and a
//! bencoded dictionary per UDP datagram.

pub mod bencode;
