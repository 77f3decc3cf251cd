// Package layering holds the tests that keep Petrel's imports running one
// way (docs/ARCHITECTURE.md "Layers") and go.mod tidy. The layers:
//
//	cmd -> machine -> devices, firmware -> block, vmm
//	devices -> firmware/aml (the AML builder, a leaf), never firmware -> devices
//
// It has no code: layering_test.go parses every file's imports and fails on
// an edge the rules forbid; gomod_test.go runs `go mod tidy -diff`.
package layering
