// Package layering holds the test that keeps Petrel's imports running one
// way (docs/ARCHITECTURE.md "Layers"), and go.mod tidy:
//
//	cmd -> machine -> devices, firmware -> block, vmm
//	devices -> firmware/aml (the AML builder, a leaf), never firmware -> devices
//
// It has no code: layering_test.go parses every file's imports
// and fails on an edge the rules forbid.
package layering
