package aml

import "fmt"

// Namespace modifier and named object opcodes (20.2.5.1, 20.2.5.2).
const (
	nameOp    = 0x08
	scopeOp   = 0x10
	methodOp  = 0x14
	extOp     = 0x5b
	deviceExt = 0x82
)

// Name declares a named data object (ASL Name(path, value)).
type Name struct {
	Path  string
	Value Term
}

// AppendAML implements Term.
func (n Name) AppendAML(e *Encoder) {
	e.Emit(nameOp)
	e.Name(n.Path)
	e.Term(n.Value)
}

// Scope opens an existing scope (ASL Scope(path){...}).
type Scope struct {
	Path string
	Body []Term
}

// AppendAML implements Term.
func (s Scope) AppendAML(e *Encoder) {
	e.Pkg([]byte{scopeOp}, func(e *Encoder) {
		e.Name(s.Path)
		e.Terms(s.Body)
	})
}

// Device declares a device (ASL Device(path){...}).
type Device struct {
	Path string
	Body []Term
}

// AppendAML implements Term.
func (d Device) AppendAML(e *Encoder) {
	e.Pkg([]byte{extOp, deviceExt}, func(e *Encoder) {
		e.Name(d.Path)
		e.Terms(d.Body)
	})
}

// Method declares a control method (ASL Method(path, args, Serialized|NotSerialized, sync){...}).
type Method struct {
	Path       string
	Args       int // 0..7
	Serialized bool
	SyncLevel  int // 0..15, meaningful when Serialized
	Body       []Term
}

// AppendAML implements Term.
func (m Method) AppendAML(e *Encoder) {
	if m.Args < 0 || m.Args > 7 || m.SyncLevel < 0 || m.SyncLevel > 15 {
		e.Fail(fmt.Errorf("aml: method %s: %d args / sync level %d out of range", m.Path, m.Args, m.SyncLevel))
		return
	}
	flags := byte(m.Args) | byte(m.SyncLevel)<<4
	if m.Serialized {
		flags |= 1 << 3
	}
	e.Pkg([]byte{methodOp}, func(e *Encoder) {
		e.Name(m.Path)
		e.Emit(flags)
		e.Terms(m.Body)
	})
}
