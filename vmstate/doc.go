// Package vmstate is the format of a saved machine (savevm/loadvm): the
// byte stream Petrel writes into a qcow2 snapshot's VM-state area
// (docs/ARCHITECTURE.md, "Saved machine state") and reads back on load.
//
// A stream is self-describing and versioned, little-endian throughout:
//
//	header   "PETRELVM" (8 bytes), format version u32, flags u32 (0)
//	section  tag u8 = 1, name (u16 length + bytes), section version u32,
//	         payload length u64, payload
//	...      (any number of sections, names unique)
//	end      tag u8 = 0, CRC-32C (Castagnoli) u32 of every byte before it
//
// Small sections (a device's registers) are read whole into memory, up to
// MaxSection bytes; a large one (guest RAM) is streamed. A reader checks the
// CRC only at the end, so a caller that must not act on a damaged state
// reads the stream through once (Verify) before applying it.
//
// Inside a section a device writes its fields with Enc and reads them with
// Dec: fixed-width integers, booleans and length-prefixed byte strings, no
// padding, no field names. A section's version says which fields follow;
// a device refuses a version it does not know (Dec.Version).
//
// A leaf: imports only the standard library.
package vmstate
