package proxy

import (
	"sync"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// accessFields recycles the access line's field slices.
var accessFields = sync.Pool{New: func() any { s := make([]zap.Field, 0, 16); return &s }}

// writeAccess writes ce with fields copied into a pooled slice. Passing the
// caller's variadic slice on to ce.Write would move it to the heap (an
// interface call keeps it), one allocation per request; copied, the
// caller's array stays on its stack. Callers may pass any number of
// fields. zap's cores encode fields during Write and keep none.
func writeAccess(ce *zapcore.CheckedEntry, fields ...zap.Field) {
	fs := accessFields.Get().(*[]zap.Field)
	*fs = append((*fs)[:0], fields...)
	ce.Write(*fs...)
	clear(*fs) // drop the strings they point to
	*fs = (*fs)[:0]
	accessFields.Put(fs)
}
