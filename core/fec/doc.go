// Package fec protects groups of IP packets with a systematic Reed-Solomon
// code so that a lossy carrier (QUIC datagrams) does not show its losses to
// the TCP connections inside the tunnel: a lost packet is rebuilt from the
// parity that follows its group instead of waiting for the inner TCP to
// time out and retransmit.
//
// The code is systematic: every packet goes out at once, unchanged, as a
// data shard, so protection adds no latency when nothing is lost. After k
// data shards the [Encoder] emits m parity shards; any k of the k+m shards
// of a group rebuild all k packets. The [Decoder] delivers each data shard
// the moment it arrives and uses parity only to rebuild the missing ones.
// [Choose] picks (k, m) from the loss rate the peer's decoder measures.
//
// # Wire format
//
// Every shard is one datagram payload: a 7-byte header, big endian,
// followed by the body.
//
//	offset size field
//	0      4    group  group number, +1 per group, wrapping modulo 2^32
//	4      1    index  shard index within the group
//	5      1    k      number of data shards of the group (see below)
//	6      1    m      number of parity shards of the group
//	7      -    body
//
// A shard with index < k is a data shard: its body is the packet itself,
// unpadded, 1 to 65535 bytes (the receiver's configured maximum may be
// lower). k in a data shard is the group size the sender planned when it
// opened the group; all data shards of a group carry the same k and m.
//
// A shard with index >= k is a parity shard, number index-k of m. Its k is
// the number of data shards the group actually got: the planned size for a
// full group, fewer when the sender closed the group early ([Encoder.Flush]).
// Data shards of a group therefore all have index < that k. All parity
// shards of a group carry the same k, m and body length.
//
// A group closed early with k of its planned K data shards gets
// [FlushParity](m, k, K) of its m parity shards, numbers 0 up: the fewest
// that keep its packets as safe as a full group's; their header still
// carries the group's m. So a slow flow whose groups seldom fill is as well
// protected as a fast one (and pays more overhead); the receiver expects
// exactly these shards when it counts loss.
//
// Limits: 1 <= k <= [MaxK], 0 <= m <= [MaxM], index < k+m. A group with
// m = 0 sends no parity; its numbering still lets the receiver count loss.
//
// # Encoding shards
//
// Parity is not computed over the packets but over encoding shards, which
// are never sent:
//
//	len    uint16  packet length (big endian)
//	crc    uint32  CRC-32C (Castagnoli) of the packet (big endian)
//	packet len bytes
//	zeros  padding up to the group's encoding shard size
//
// The encoding shard size S is 6 + the length of the group's longest packet;
// a parity body is exactly S bytes. With E_i the encoding shard of data
// shard i, zero-padded to S, parity shard j (0 <= j < m) is, byte by byte,
//
//	P_j = sum over i < k of C[j][i] * E_i,  C[j][i] = 1 / ((64+j) XOR i)
//
// in GF(2^8) modulo x^8+x^4+x^3+x^2+1 (0x11D), the field of
// github.com/klauspost/reedsolomon, which computes it here. C is a Cauchy
// matrix, so the code is MDS: any k of a group's k+m shards rebuild all k
// data shards. Its coefficients do not depend on k, so a group closed early
// is coded exactly like a full group whose remaining data shards are zero.
//
// The receiver rebuilds the encoding shard of each data shard it got (len
// and CRC recomputed, zero padding to S from the parity length), decodes,
// and delivers a rebuilt packet only if 1 <= len <= S-6 and its CRC matches:
// broken parity yields a counted loss ([Stats].Corrupt), never a corrupt
// packet.
//
// # Receiving
//
// The decoder tracks a window of consecutive group numbers ending at the
// highest seen (serial-number arithmetic, so numbers wrap). Each data shard
// is delivered once while its group is tracked; data of a group behind the
// window is still delivered, untracked, and its parity dropped. A group
// closes when it leaves the window, when it has been open for MaxWait, or
// early when the memory bound needs its buffers; then its missing data is
// counted as unrecoverable.
//
// # Measuring loss
//
// At close, a group expected k+m shards (k from its parity; without parity
// the planned k from its data, or, with m = 0, one past the highest data
// index seen, so losses at the tail of such a group go unseen). The lost
// fraction of shards, averaged over recent groups, is [Decoder.LossRate]; a
// group inside the window of which nothing arrived counts as lost whole,
// sized like the group closed before it. The session reports the rate to
// the peer, whose [Choose] turns it into the next (k, m).
//
// # Framing around it
//
// The package does not say how a shard is told apart from a plain packet on
// the carrier; the session frames them. A packet longer than the encoder's
// maximum is refused by [Encoder.Add] and goes out unprotected.
package fec
