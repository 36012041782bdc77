package main

import "math/bits"

// hist is a log-linear latency histogram in microseconds: exact below
// 128 µs, then 64 buckets per power of two (relative error below 1.6%).
// Not safe for concurrent use: each worker keeps its own and they are merged.
type hist struct {
	counts [2048]int64
	n      int64
	sum    int64 // µs
	max    int64 // µs
}

const histSubBits = 7 // 128 sub-buckets, of which the upper 64 are used above 128

func histIndex(v int64) int {
	if v < 0 {
		v = 0
	}
	u := uint64(v)
	l := bits.Len64(u)
	if l <= histSubBits {
		return int(u)
	}
	e := l - histSubBits
	return e*64 + int(u>>e)
}

// histBounds returns the smallest and largest value of bucket i.
func histBounds(i int) (lo, hi int64) {
	if i < 128 {
		return int64(i), int64(i)
	}
	e := i/64 - 1
	m := int64(i - e*64)
	return m << e, (m+1)<<e - 1
}

func (h *hist) record(us int64) {
	i := histIndex(us)
	if i >= len(h.counts) {
		i = len(h.counts) - 1
	}
	h.counts[i]++
	h.n++
	h.sum += us
	if us > h.max {
		h.max = us
	}
}

func (h *hist) merge(o *hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	if o.max > h.max {
		h.max = o.max
	}
}

// quantile returns the q-quantile (0..1) in µs, the midpoint of its bucket.
func (h *hist) quantile(q float64) float64 {
	if h.n == 0 {
		return 0
	}
	rank := int64(q*float64(h.n) + 0.5)
	if rank < 1 {
		rank = 1
	}
	var seen int64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			lo, hi := histBounds(i)
			return float64(lo+hi) / 2
		}
	}
	return float64(h.max)
}

// buckets returns the non-empty buckets as [upper bound µs, count] pairs.
func (h *hist) buckets() [][2]int64 {
	var out [][2]int64
	for i, c := range h.counts {
		if c > 0 {
			_, hi := histBounds(i)
			out = append(out, [2]int64{hi, c})
		}
	}
	return out
}
