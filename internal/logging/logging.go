// Package logging builds lsproxy's zap logger: JSON (or console) lines on
// one writer, with the access log buffered.
//
// The proxy writes one line per request at info level, the default. Written
// with one write(2) each, under a lock, those lines cost a proxy at
// saturation a visible share of its throughput (docs/benchmarks.md). So
// every line goes through
// one zapcore.BufferedWriteSyncer, and only the access log's info lines wait
// in it, for at most FlushInterval or until the buffer is full (a full
// buffer is written at once: no line is dropped). Every other line, and any
// access-log line at warn or above, flushes the buffer right after it is
// written, so lines keep their order and operational messages (startup,
// errors) appear at once. Close flushes; a process killed with SIGKILL
// loses at most FlushInterval of access lines.
package logging

import (
	"io"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// AccessLogName is the logger name whose info lines are buffered: the
// proxy handler's logger.
const AccessLogName = "proxy"

// Defaults of Options.
const (
	DefaultFlushInterval = time.Second
	DefaultBufferSize    = 256 << 10
)

// Options configure New. Zero values take the defaults.
type Options struct {
	// Level is a zap level name ("debug", "info", ...); "" = info.
	Level string
	// Format is "json" (default) or "console".
	Format string
	// FlushInterval bounds how long an access-log line waits in the buffer;
	// default DefaultFlushInterval.
	FlushInterval time.Duration
	// BufferSize is the buffer's capacity in bytes; default
	// DefaultBufferSize.
	BufferSize int
}

// New returns a logger writing to w and a close func that flushes and stops
// the periodic flush; call it once, at exit. The logger is safe for
// concurrent use; w is written by one goroutine at a time. It returns an
// error for an unknown level.
func New(w io.Writer, o Options) (*zap.Logger, func() error, error) {
	level := zapcore.InfoLevel
	if o.Level != "" {
		l, err := zapcore.ParseLevel(o.Level)
		if err != nil {
			return nil, nil, err
		}
		level = l
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = DefaultFlushInterval
	}
	if o.BufferSize <= 0 {
		o.BufferSize = DefaultBufferSize
	}
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey = "ts"
	enc.EncodeTime = iso8601TimeEncoder
	var encoder zapcore.Encoder
	if o.Format == "console" {
		encoder = zapcore.NewConsoleEncoder(enc)
	} else {
		encoder = zapcore.NewJSONEncoder(enc)
	}
	// writerOnly hides an *os.File's Sync: fsync on a pipe or terminal
	// fails, and a flush is all a log line needs.
	buf := &zapcore.BufferedWriteSyncer{
		WS:            zapcore.AddSync(writerOnly{w}),
		Size:          o.BufferSize,
		FlushInterval: o.FlushInterval,
	}
	core := &flushCore{Core: zapcore.NewCore(encoder, buf, level), buf: buf, json: o.Format != "console"}
	return zap.New(core), buf.Stop, nil
}

type writerOnly struct{ io.Writer }

// flushCore flushes buf after every entry but the access log's info lines.
type flushCore struct {
	zapcore.Core
	buf *zapcore.BufferedWriteSyncer
	// json: lines are JSON, so AccessLog may write them itself; false
	// (console format, or context fields added by With) leaves them to zap.
	json bool
}

var _ zapcore.Core = (*flushCore)(nil)

func (c *flushCore) With(fields []zapcore.Field) zapcore.Core {
	return &flushCore{Core: c.Core.With(fields), buf: c.buf, json: c.json && len(fields) == 0}
}

func (c *flushCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(ent.Level) {
		return ce.AddCore(ent, c)
	}
	return ce
}

func (c *flushCore) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	if err := c.Core.Write(ent, fields); err != nil {
		return err
	}
	if ent.Level >= zapcore.WarnLevel || ent.LoggerName != AccessLogName {
		return c.buf.Sync()
	}
	return nil
}

// timePrefix is the formatted time of one second: what every line written
// in that second shares.
type timePrefix struct {
	sec    int64
	loc    *time.Location
	prefix []byte // "2006-01-02T15:04:05."
	zone   []byte // "Z0700"
}

var lastSecond atomic.Pointer[timePrefix]

// iso8601TimeEncoder writes what zapcore.ISO8601TimeEncoder writes
// ("2006-01-02T15:04:05.000Z0700") at a fraction of its cost: the
// formatting of the second is shared by every line within it (at
// thousands of access lines a second, formatting each was a fifth of a
// line's cost).
func iso8601TimeEncoder(t time.Time, enc zapcore.PrimitiveArrayEncoder) {
	var b [40]byte
	enc.AppendByteString(appendISO8601(b[:0], t))
}

// appendISO8601 appends t as "2006-01-02T15:04:05.000Z0700", the
// formatting of its second shared with every other time in that second.
func appendISO8601(out []byte, t time.Time) []byte {
	sec := t.Unix()
	p := lastSecond.Load()
	if p == nil || p.sec != sec || p.loc != t.Location() {
		p = &timePrefix{sec: sec, loc: t.Location(),
			prefix: t.AppendFormat(nil, "2006-01-02T15:04:05."), zone: t.AppendFormat(nil, "Z0700")}
		lastSecond.Store(p)
	}
	out = append(out, p.prefix...)
	ms := t.Nanosecond() / 1e6
	out = append(out, byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10))
	return append(out, p.zone...)
}
