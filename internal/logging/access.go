package logging

import (
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Access is one access-log line: what the proxy logs of each request.
type Access struct {
	Time            time.Time
	Tenant          string
	Method          string
	Path            string
	Status          int
	Latency         time.Duration
	UpstreamLatency time.Duration
	Error           string
	Replayed        bool
	RequestID       string
	Caller          string
}

// AccessLog writes access lines byte for byte as zap's JSON encoder would
// write the same fields, without zap's per-field work: at one line per
// request, that work was half of what the default configuration cost a
// request over the quiet one (docs/benchmarks.md). Lines go into the same
// buffer as every other line, so order and flushing are as for zap's.
// It is safe for concurrent use.
type AccessLog struct {
	head  []byte // {"level":"info","ts":"
	tail  []byte // ","logger":"proxy","msg":"request"
	buf   *zapcore.BufferedWriteSyncer
	flush bool // not the access log's name: flushed after each line, as flushCore does
}

var accessBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// NewAccessLog returns the writer of lg's info lines with message msg, or
// nil when lg was not built by New in JSON format, has context fields, or
// drops info lines: the caller then logs through zap (or not at all).
func NewAccessLog(lg *zap.Logger, msg string) *AccessLog {
	c, ok := lg.Core().(*flushCore)
	if !ok || !c.json || !c.Enabled(zapcore.InfoLevel) {
		return nil
	}
	tail := []byte(`","logger":`)
	tail = appendJSONString(tail, lg.Name())
	tail = append(tail, `,"msg":`...)
	tail = appendJSONString(tail, msg)
	return &AccessLog{head: []byte(`{"level":"info","ts":"`), tail: tail, buf: c.buf, flush: lg.Name() != AccessLogName}
}

// Write writes one line. A write error is dropped, as zap drops it (it
// goes to zap's ErrorOutput there; the buffer reports none until a flush).
func (a *AccessLog) Write(e *Access) {
	bp := accessBufs.Get().(*[]byte)
	b := append((*bp)[:0], a.head...)
	b = appendISO8601(b, e.Time)
	b = append(b, a.tail...)
	b = appendField(b, "tenant")
	b = appendJSONString(b, e.Tenant)
	b = appendField(b, "method")
	b = appendJSONString(b, e.Method)
	b = appendField(b, "path")
	b = appendJSONString(b, e.Path)
	b = appendField(b, "status")
	b = strconv.AppendInt(b, int64(e.Status), 10)
	b = appendField(b, "latency")
	b = appendSeconds(b, e.Latency)
	b = appendField(b, "upstream_latency")
	b = appendSeconds(b, e.UpstreamLatency)
	b = appendField(b, "error")
	b = appendJSONString(b, e.Error)
	b = appendField(b, "replayed")
	b = strconv.AppendBool(b, e.Replayed)
	b = appendField(b, "request_id")
	b = appendJSONString(b, e.RequestID)
	b = appendField(b, "caller")
	b = appendJSONString(b, e.Caller)
	b = append(b, "}\n"...)
	_, _ = a.buf.Write(b)
	if a.flush {
		_ = a.buf.Sync()
	}
	if cap(b) <= 4<<10 { // a huge path's buffer is not kept
		*bp = b
		accessBufs.Put(bp)
	}
}

func appendField(b []byte, key string) []byte {
	b = append(b, ',', '"')
	b = append(b, key...)
	return append(b, '"', ':')
}

// appendSeconds is zapcore.SecondsDurationEncoder's JSON: the shortest
// decimal of float64(d)/1e9. Below 1e15 ns that is d's exact decimal in
// seconds (at most 15 significant digits, which a float64 keeps), written
// from the integer at a third of strconv.AppendFloat's cost.
func appendSeconds(b []byte, d time.Duration) []byte {
	if d < 0 || d >= 1e15 {
		return strconv.AppendFloat(b, float64(d)/float64(time.Second), 'f', -1, 64)
	}
	b = strconv.AppendInt(b, int64(d/time.Second), 10)
	ns := int64(d % time.Second)
	if ns == 0 {
		return b
	}
	var frac [10]byte
	frac[0] = '.'
	for i := 9; i > 0; i-- {
		frac[i] = byte('0' + ns%10)
		ns /= 10
	}
	n := len(frac)
	for frac[n-1] == '0' {
		n--
	}
	return append(b, frac[:n]...)
}

const lowerHex = "0123456789abcdef"

// appendJSONString appends s quoted as zap's JSON encoder does: \\ \" \n
// \r \t escaped, other bytes below 0x20 as \u00xx, invalid UTF-8 as
// \ufffd, the rest as is.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	last := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r != utf8.RuneError || size != 1 {
				i += size
				continue
			}
			b = append(b, s[last:i]...)
			b = append(b, `\ufffd`...)
			i++
			last = i
			continue
		}
		if c >= 0x20 && c != '\\' && c != '"' {
			i++
			continue
		}
		b = append(b, s[last:i]...)
		switch c {
		case '\\', '"':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', lowerHex[c>>4], lowerHex[c&0xF])
		}
		i++
		last = i
	}
	b = append(b, s[last:]...)
	return append(b, '"')
}
