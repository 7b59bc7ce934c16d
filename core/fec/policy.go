package fec

import (
	"math"
	"sync/atomic"
)

// The adaptation policy. Constants rather than options: both ends of a
// session need no agreement on them (the shape travels in every header),
// and they encode one judgement, written down here.
const (
	// CleanLoss is the loss rate below which [Choose] sends no parity: at
	// under 0.1 % the inner TCP's own recovery costs less than parity.
	CleanLoss = 0.001
	// TargetResidual is the per-packet loss [Choose] aims to leave after
	// recovery: 1e-5, about one TCP retransmission per 100,000 packets.
	TargetResidual = 1e-5
	// ChooseMaxK bounds the group size [Choose] picks, so a group fills in
	// a few milliseconds at modest rates and the flush timer rarely fires.
	ChooseMaxK = 32
	// MaxOverhead caps the parity [Choose] spends, as m/k.
	MaxOverhead = 0.5
)

// Residual returns the probability that a data packet is lost for good with
// groups of k data and m parity shards when every shard is lost
// independently with probability loss: the packet is lost and at least m of
// the other k+m-1 shards are lost too, so its group cannot be rebuilt.
func Residual(loss float64, k, m int) float64 {
	if loss <= 0 {
		return 0
	}
	if loss >= 1 {
		return 1
	}
	return loss * binomialTail(k+m-1, m, loss)
}

// binomialTail returns P(X >= r) for X ~ Binomial(n, p), summing the upper
// terms (few, as r is near n*p or above it) in log space for precision.
func binomialTail(n, r int, p float64) float64 {
	if r <= 0 {
		return 1
	}
	if r > n {
		return 0
	}
	lp, lq := math.Log(p), math.Log1p(-p)
	sum := 0.0
	for i := r; i <= n; i++ {
		sum += math.Exp(logChoose(n, i) + float64(i)*lp + float64(n-i)*lq)
	}
	return math.Min(sum, 1)
}

func logChoose(n, k int) float64 {
	a, _ := math.Lgamma(float64(n + 1))
	b, _ := math.Lgamma(float64(k + 1))
	c, _ := math.Lgamma(float64(n - k + 1))
	return a - b - c
}

// Choose picks the group shape for a measured shard loss rate. Below
// [CleanLoss] it returns (ChooseMaxK, 0): no parity, groups only numbered so
// the peer keeps measuring. Otherwise it returns the shape with the least
// overhead m/k, among k <= [ChooseMaxK] and m/k <= [MaxOverhead], whose
// [Residual] is at most [TargetResidual]; of equal overheads the smaller
// group, as it fills and recovers sooner. If no shape within the cap meets
// the target (loss beyond about 10 %), it returns the shape with the lowest
// residual within the cap.
func Choose(loss float64) (k, m int) {
	if !(loss >= CleanLoss) { // also NaN
		return ChooseMaxK, 0
	}
	bestK, bestM, bestOver := 0, 0, math.Inf(1)
	fallK, fallM, fallRes := ChooseMaxK, 1, math.Inf(1)
	for k := 1; k <= ChooseMaxK; k++ {
		maxM := min(int(MaxOverhead*float64(k)), MaxM)
		for m := 1; m <= maxM; m++ {
			res := Residual(loss, k, m)
			if res < fallRes {
				fallK, fallM, fallRes = k, m, res
			}
			if res > TargetResidual {
				continue
			}
			// The smallest m meeting the target for this k.
			if over := float64(m) / float64(k); over < bestOver {
				bestK, bestM, bestOver = k, m, over
			}
			break
		}
	}
	if bestK == 0 {
		return fallK, fallM
	}
	return bestK, bestM
}

// Config is how an end protects what it sends: a fixed group shape (K data
// and M parity shards; the fec_data / fec_parity keys), or, with K == 0,
// the shape [Choose] picks from the loss the end measures on its path
// (fec = "auto").
type Config struct {
	K, M int
}

// Auto reports whether the shape adapts to the measured loss.
func (c Config) Auto() bool { return c.K == 0 }

// FlushParity is how many parity shards a group with m parity planned for
// planned data shards gets when it closes with k of them: all m for a full
// group; for a group closed early, the fewest (at least one, at most m)
// that keep its packets as safe as a full group's: residual loss
// ([Residual]) no higher at the loss rate the full shape is made for (the
// highest at which it meets [TargetResidual]).
//
// A flat share of m (m*k/planned) left a slow flow, whose groups close
// with a few packets, with one parity shard per group: at 3 % loss that is
// 0.3 % residual loss, which keeps a loss-based congestion control slow,
// its groups small and its protection weak. A slow flow pays more
// overhead instead (3 % loss: 3 parity for 3 packets); a fast one fills
// its groups and pays m/planned. Both ends compute it: the receiver's loss
// count expects exactly these shards.
func FlushParity(m, k, planned int) int {
	if m == 0 || k >= planned || planned <= 0 || k <= 0 || planned > MaxK || m > MaxM {
		return m
	}
	row := flushRows[planned][m].Load()
	if row == nil {
		row = flushRow(planned, m)
		flushRows[planned][m].Store(row)
	}
	return int(row[k])
}

// flushRows caches FlushParity for each full shape, computed on first use
// (a race computes the same row twice).
var flushRows [MaxK + 1][MaxM + 1]atomic.Pointer[[MaxK]uint8]

func flushRow(planned, m int) *[MaxK]uint8 {
	loss := shapeLoss(planned, m)
	target := math.Max(TargetResidual, Residual(loss, planned, m))
	var row [MaxK]uint8
	for k := 1; k < planned; k++ {
		p := 1
		for p < m && Residual(loss, k, p) > target {
			p++
		}
		row[k] = uint8(p)
	}
	return &row
}

// shapeLoss is the highest loss rate, up to 50 %, at which groups of k data
// and m parity shards keep [Residual] within [TargetResidual] (1e-6 when
// none does).
func shapeLoss(k, m int) float64 {
	lo, hi := 1e-6, 0.5
	if Residual(hi, k, m) <= TargetResidual {
		return hi
	}
	for range 40 {
		mid := (lo + hi) / 2
		if Residual(mid, k, m) <= TargetResidual {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo
}
