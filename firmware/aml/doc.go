// Package aml builds ACPI Machine Language (ACPI 6.x chapter 20, "ACPI
// Machine Language Specification"). It is a leaf: it imports nothing of
// Petrel's, so that devices can describe themselves with it (devices ->
// firmware/aml) without firmware depending on devices.
//
// Each ASL construct is a Go type implementing Term, whose AppendAML appends
// its AML encoding to an Encoder: Scope, Device, Method, Name, If/Else,
// While, Break, Store, Notify, Return, the arithmetic and logical operators
// (And, Or, Xor, Add, Subtract, ShiftLeft, ShiftRight, Not, Increment,
// Decrement, Index, DerefOf, SizeOf, LEqual, LLess, LGreater, LAnd, LOr,
// LNot), Package, Buffer, Integer, String, EisaID, OperationRegion, Field,
// ResourceTemplate with IO, IRQNoFlags, Interrupt, WordBusNumber, WordIO,
// DWordMemory and QWordMemory descriptors, Local0-7, Arg0-6, Path
// references and Call. Encode(terms...) returns the bytes or the first error
// (invalid name, out-of-range operand); a term never panics on bad input.
//
// The output is byte-identical to what `iasl -on` compiles from the
// equivalent ASL: golden_test.go puts the ASL source beside the terms and
// compares the two encodings for every construct. Wrapping the bytes in a
// DSDT or SSDT header is firmware/acpi's job (acpi.DefinitionBlock).
package aml
