package fec

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/klauspost/reedsolomon"
)

const (
	// HeaderLen is the length of the shard header that precedes every body.
	HeaderLen = 7
	// MaxK is the largest number of data shards in a group; a bit per data
	// shard fits in a uint64.
	MaxK = 64
	// MaxM is the largest number of parity shards in a group.
	MaxM = 32
	// MaxPacket is the largest packet a shard can carry: the encoding
	// shard's length field is 16 bits.
	MaxPacket = 65535

	// encHeaderLen is the length and CRC that precede the packet in an
	// encoding shard.
	encHeaderLen = 6
)

var (
	// ErrTooLarge is returned by [Encoder.Add] for a packet longer than the
	// encoder's maximum; the caller sends such a packet unprotected.
	ErrTooLarge = errors.New("fec: packet too large")
	// ErrEmpty is returned by [Encoder.Add] for a zero-length packet.
	ErrEmpty = errors.New("fec: empty packet")
	// ErrMalformed is wrapped by every error [Decoder.Receive] returns for
	// a shard it dropped or could not use.
	ErrMalformed = errors.New("fec: malformed shard")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// header is the decoded shard header.
type header struct {
	group uint32
	index int
	k, m  int
}

func (h header) isData() bool { return h.index < h.k }

// putHeader writes h into the first HeaderLen bytes of b.
func putHeader(b []byte, group uint32, index, k, m int) {
	binary.BigEndian.PutUint32(b, group)
	b[4] = byte(index)
	b[5] = byte(k)
	b[6] = byte(m)
}

// parseHeader decodes and range-checks the header of shard.
func parseHeader(shard []byte) (header, error) {
	if len(shard) < HeaderLen {
		return header{}, fmt.Errorf("%w: %d bytes, header needs %d", ErrMalformed, len(shard), HeaderLen)
	}
	h := header{
		group: binary.BigEndian.Uint32(shard),
		index: int(shard[4]),
		k:     int(shard[5]),
		m:     int(shard[6]),
	}
	switch {
	case h.k == 0 || h.k > MaxK:
		return h, fmt.Errorf("%w: k=%d outside 1..%d", ErrMalformed, h.k, MaxK)
	case h.m > MaxM:
		return h, fmt.Errorf("%w: m=%d above %d", ErrMalformed, h.m, MaxM)
	case h.index >= h.k+h.m:
		return h, fmt.Errorf("%w: index %d >= k+m=%d", ErrMalformed, h.index, h.k+h.m)
	}
	return h, nil
}

// putEncoding writes the encoding shard prefix and pkt into b, which must
// hold encHeaderLen+len(pkt) bytes, and returns that many bytes of b.
func putEncoding(b, pkt []byte) []byte {
	binary.BigEndian.PutUint16(b, uint16(len(pkt)))
	binary.BigEndian.PutUint32(b[2:], crc32.Checksum(pkt, castagnoli))
	n := copy(b[encHeaderLen:], pkt)
	return b[:encHeaderLen+n]
}

// checkEncoding returns the packet inside a rebuilt encoding shard, or false
// if its length does not fit or its CRC does not match.
func checkEncoding(b []byte) ([]byte, bool) {
	n := int(binary.BigEndian.Uint16(b))
	if n == 0 || encHeaderLen+n > len(b) {
		return nil, false
	}
	pkt := b[encHeaderLen : encHeaderLen+n]
	if crc32.Checksum(pkt, castagnoli) != binary.BigEndian.Uint32(b[2:]) {
		return nil, false
	}
	return pkt, true
}

// cauchy is the parity part of the code: parity shard j is the sum over
// GF(2^8) of cauchy[j][i] times encoding shard i. cauchy[j][i] =
// 1/((MaxK+j) XOR i), a Cauchy matrix (x_j = MaxK+j and y_i = i are distinct),
// so every square submatrix is invertible and any k of a group's k+m shards
// rebuild it. The coefficients do not depend on k: a group flushed after k'
// shards is coded exactly like a full one whose other shards are zero, and
// the encoder can fold each packet into the parity as it passes.
var cauchy = func() [][]byte {
	rows := make([][]byte, MaxM)
	for j := range rows {
		rows[j] = make([]byte, MaxK)
		for i := range rows[j] {
			rows[j][i] = gfInv(byte(MaxK+j) ^ byte(i))
		}
	}
	return rows
}()

// gfInv returns the inverse of a != 0 in GF(2^8) modulo x^8+x^4+x^3+x^2+1
// (0x11D), the field klauspost/reedsolomon computes in.
func gfInv(a byte) byte {
	// a^254 = a^-1, by square-and-multiply.
	r, p := byte(1), a
	for e := 254; e > 0; e >>= 1 {
		if e&1 != 0 {
			r = gfMul(r, p)
		}
		p = gfMul(p, p)
	}
	return r
}

func gfMul(a, b byte) byte {
	var r byte
	for ; b != 0; b >>= 1 {
		if b&1 != 0 {
			r ^= a
		}
		carry := a & 0x80
		a <<= 1
		if carry != 0 {
			a ^= 0x1d
		}
	}
	return r
}

// codecs caches Reed-Solomon codecs by group shape. It is bounded: when full
// it starts over, which only costs rebuilding a matrix.
type codecs struct {
	m    map[[2]uint8]reedsolomon.Encoder
	opts []reedsolomon.Option
}

const maxCodecs = 16

func newCodecs(opts ...reedsolomon.Option) codecs {
	opts = append(opts, reedsolomon.WithCustomMatrix(cauchy))
	return codecs{m: make(map[[2]uint8]reedsolomon.Encoder), opts: opts}
}

// get returns the codec for k data and m parity shards (m > 0).
func (c *codecs) get(k, m int) (reedsolomon.Encoder, error) {
	key := [2]uint8{uint8(k), uint8(m)}
	if rs, ok := c.m[key]; ok {
		return rs, nil
	}
	rs, err := reedsolomon.New(k, m, c.opts...)
	if err != nil {
		return nil, fmt.Errorf("fec: reed-solomon codec k=%d m=%d: %w", k, m, err)
	}
	if len(c.m) >= maxCodecs {
		clear(c.m)
	}
	c.m[key] = rs
	return rs, nil
}
