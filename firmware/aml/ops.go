package aml

// Statement and expression opcodes (20.2.5.3, 20.2.5.4).
const (
	storeOp      = 0x70
	addOp        = 0x72
	subtractOp   = 0x74
	incrementOp  = 0x75
	decrementOp  = 0x76
	shiftLeftOp  = 0x79
	shiftRightOp = 0x7a
	andOp        = 0x7b
	orOp         = 0x7d
	xorOp        = 0x7f
	notOp        = 0x80
	derefOfOp    = 0x83
	notifyOp     = 0x86
	sizeOfOp     = 0x87
	indexOp      = 0x88
	lAndOp       = 0x90
	lOrOp        = 0x91
	lNotOp       = 0x92
	lEqualOp     = 0x93
	lGreaterOp   = 0x94
	lLessOp      = 0x95
	ifOp         = 0xa0
	elseOp       = 0xa1
	whileOp      = 0xa2
	returnOp     = 0xa4
	breakOp      = 0xa5
)

// target appends an optional Target operand: NullName when t is nil.
func (e *Encoder) target(t Term) {
	if t == nil {
		e.Emit(nullName)
		return
	}
	e.Term(t)
}

// If is ASL If(Predicate){Then} with an optional Else{Else} (emitted when
// Else is non-nil; ElseOp follows the IfOp package in AML).
type If struct {
	Predicate Term
	Then      []Term
	Else      []Term
}

// AppendAML implements Term.
func (i If) AppendAML(e *Encoder) {
	e.Pkg([]byte{ifOp}, func(e *Encoder) {
		e.Term(i.Predicate)
		e.Terms(i.Then)
	})
	if i.Else != nil {
		e.Pkg([]byte{elseOp}, func(e *Encoder) { e.Terms(i.Else) })
	}
}

// While is ASL While(Predicate){Body}.
type While struct {
	Predicate Term
	Body      []Term
}

// AppendAML implements Term.
func (w While) AppendAML(e *Encoder) {
	e.Pkg([]byte{whileOp}, func(e *Encoder) {
		e.Term(w.Predicate)
		e.Terms(w.Body)
	})
}

// Break is ASL Break (leaves the innermost While).
type Break struct{}

// AppendAML implements Term.
func (Break) AppendAML(e *Encoder) { e.Emit(breakOp) }

// Return is ASL Return(Value).
type Return struct{ Value Term }

// AppendAML implements Term.
func (r Return) AppendAML(e *Encoder) {
	e.Emit(returnOp)
	e.Term(r.Value)
}

// Store is ASL Store(Source, Dest).
type Store struct{ Source, Dest Term }

// AppendAML implements Term.
func (s Store) AppendAML(e *Encoder) {
	e.Emit(storeOp)
	e.Term(s.Source)
	e.Term(s.Dest)
}

// Notify is ASL Notify(Object, Value).
type Notify struct{ Object, Value Term }

// AppendAML implements Term.
func (n Notify) AppendAML(e *Encoder) {
	e.Emit(notifyOp)
	e.Term(n.Object)
	e.Term(n.Value)
}

// binary is the shape of the two-operand, one-target integer operators.
func (e *Encoder) binary(op byte, a, b, target Term) {
	e.Emit(op)
	e.Term(a)
	e.Term(b)
	e.target(target)
}

// And is ASL And(A, B, Target); a nil Target discards the result.
type And struct{ A, B, Target Term }

// AppendAML implements Term.
func (o And) AppendAML(e *Encoder) { e.binary(andOp, o.A, o.B, o.Target) }

// Or is ASL Or(A, B, Target).
type Or struct{ A, B, Target Term }

// AppendAML implements Term.
func (o Or) AppendAML(e *Encoder) { e.binary(orOp, o.A, o.B, o.Target) }

// Xor is ASL Xor(A, B, Target).
type Xor struct{ A, B, Target Term }

// AppendAML implements Term.
func (o Xor) AppendAML(e *Encoder) { e.binary(xorOp, o.A, o.B, o.Target) }

// Add is ASL Add(A, B, Target).
type Add struct{ A, B, Target Term }

// AppendAML implements Term.
func (o Add) AppendAML(e *Encoder) { e.binary(addOp, o.A, o.B, o.Target) }

// Subtract is ASL Subtract(A, B, Target).
type Subtract struct{ A, B, Target Term }

// AppendAML implements Term.
func (o Subtract) AppendAML(e *Encoder) { e.binary(subtractOp, o.A, o.B, o.Target) }

// ShiftLeft is ASL ShiftLeft(A, B, Target): A << B.
type ShiftLeft struct{ A, B, Target Term }

// AppendAML implements Term.
func (o ShiftLeft) AppendAML(e *Encoder) { e.binary(shiftLeftOp, o.A, o.B, o.Target) }

// ShiftRight is ASL ShiftRight(A, B, Target): A >> B.
type ShiftRight struct{ A, B, Target Term }

// AppendAML implements Term.
func (o ShiftRight) AppendAML(e *Encoder) { e.binary(shiftRightOp, o.A, o.B, o.Target) }

// Index is ASL Index(Source, Index, Target): a reference to an element.
type Index struct{ Source, Index, Target Term }

// AppendAML implements Term.
func (o Index) AppendAML(e *Encoder) { e.binary(indexOp, o.Source, o.Index, o.Target) }

// Not is ASL Not(A, Target): bitwise complement.
type Not struct{ A, Target Term }

// AppendAML implements Term.
func (o Not) AppendAML(e *Encoder) {
	e.Emit(notOp)
	e.Term(o.A)
	e.target(o.Target)
}

// Increment is ASL Increment(Target).
type Increment struct{ Target Term }

// AppendAML implements Term.
func (o Increment) AppendAML(e *Encoder) { e.Emit(incrementOp); e.Term(o.Target) }

// Decrement is ASL Decrement(Target).
type Decrement struct{ Target Term }

// AppendAML implements Term.
func (o Decrement) AppendAML(e *Encoder) { e.Emit(decrementOp); e.Term(o.Target) }

// DerefOf is ASL DerefOf(Ref).
type DerefOf struct{ Ref Term }

// AppendAML implements Term.
func (o DerefOf) AppendAML(e *Encoder) { e.Emit(derefOfOp); e.Term(o.Ref) }

// SizeOf is ASL SizeOf(Object).
type SizeOf struct{ Object Term }

// AppendAML implements Term.
func (o SizeOf) AppendAML(e *Encoder) { e.Emit(sizeOfOp); e.Term(o.Object) }

// logical appends a two-operand logical operator.
func (e *Encoder) logical(op byte, a, b Term) {
	e.Emit(op)
	e.Term(a)
	e.Term(b)
}

// LEqual is ASL LEqual(A, B).
type LEqual struct{ A, B Term }

// AppendAML implements Term.
func (o LEqual) AppendAML(e *Encoder) { e.logical(lEqualOp, o.A, o.B) }

// LLess is ASL LLess(A, B).
type LLess struct{ A, B Term }

// AppendAML implements Term.
func (o LLess) AppendAML(e *Encoder) { e.logical(lLessOp, o.A, o.B) }

// LGreater is ASL LGreater(A, B).
type LGreater struct{ A, B Term }

// AppendAML implements Term.
func (o LGreater) AppendAML(e *Encoder) { e.logical(lGreaterOp, o.A, o.B) }

// LAnd is ASL LAnd(A, B).
type LAnd struct{ A, B Term }

// AppendAML implements Term.
func (o LAnd) AppendAML(e *Encoder) { e.logical(lAndOp, o.A, o.B) }

// LOr is ASL LOr(A, B).
type LOr struct{ A, B Term }

// AppendAML implements Term.
func (o LOr) AppendAML(e *Encoder) { e.logical(lOrOp, o.A, o.B) }

// LNot is ASL LNot(A).
type LNot struct{ A Term }

// AppendAML implements Term.
func (o LNot) AppendAML(e *Encoder) { e.Emit(lNotOp); e.Term(o.A) }
