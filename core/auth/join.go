package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
)

// joinLabel separates join proofs from any other use of a join key.
const joinLabel = "mirage join v1"

// minJoinKeyLen is the shortest join key CheckJoinProof accepts.
const minJoinKeyLen = 16

// JoinProof proves, for an extra connection joining an existing session,
// possession of that session's join key, bound to the user and to the new
// connection:
//
//	HMAC-SHA256(joinKey, "mirage join v1" || sessionID || len(user) (2 bytes, BE) || user || channelBinding)
//
// channelBinding is a TLS exporter value of the new connection, so a proof
// observed on one connection is useless on another.
func JoinProof(joinKey []byte, sessionID [16]byte, user string, channelBinding []byte) [32]byte {
	m := hmac.New(sha256.New, joinKey)
	m.Write([]byte(joinLabel))
	m.Write(sessionID[:])
	m.Write(binary.BigEndian.AppendUint16(nil, uint16(len(user))))
	m.Write([]byte(user))
	m.Write(channelBinding)
	var out [32]byte
	m.Sum(out[:0])
	return out
}

// CheckJoinProof reports, in constant time, whether proof is the JoinProof
// for these inputs. It always fails for a join key shorter than 16 bytes, an
// empty channel binding or a user name longer than 65535 bytes, so a
// misconfigured caller cannot accept unbound or trivially forged proofs.
func CheckJoinProof(joinKey []byte, sessionID [16]byte, user string, channelBinding []byte, proof []byte) bool {
	if len(joinKey) < minJoinKeyLen || len(channelBinding) == 0 || len(user) > 0xffff {
		return false
	}
	want := JoinProof(joinKey, sessionID, user, channelBinding)
	return hmac.Equal(want[:], proof)
}
