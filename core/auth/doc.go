// Package auth holds the server's authentication primitives: the users file
// (name:PHC-string lines with Argon2id hashes, compatible with the original
// Rust Mirage's mirage-users tool), a limiter for Argon2 work, resume tickets
// that let reconnects skip Argon2, session join proofs and a replay window.
//
// Nothing here does I/O on the network; the server wires these pieces into
// its handshake.
package auth
