package viewmodel

// Samples is how many one-second rate samples the graph shows.
const Samples = 60

// ring keeps the last Samples values, oldest first on read.
type ring struct {
	buf  [Samples]float64
	next int
	n    int
}

func (r *ring) push(v float64) {
	r.buf[r.next] = v
	r.next = (r.next + 1) % Samples
	if r.n < Samples {
		r.n++
	}
}

// setLast overwrites the newest value (a second update within one second).
func (r *ring) setLast(v float64) {
	if r.n == 0 {
		r.push(v)
		return
	}
	r.buf[(r.next+Samples-1)%Samples] = v
}

func (r *ring) values() []float64 {
	out := make([]float64, r.n)
	start := (r.next + Samples - r.n) % Samples
	for i := range r.n {
		out[i] = r.buf[(start+i)%Samples]
	}
	return out
}

func (r *ring) reset() { *r = ring{} }
