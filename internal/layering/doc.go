// Package layering holds the tests that keep the module in order: imports
// run one way (docs/ARCHITECTURE.md "Layers"), go.mod is tidy, every
// testdata directory says how its files were made, and the x86-only
// packages stay whole under GOARCH=ppc64. The layers:
//
//	cmd -> machine -> devices, firmware -> block, vmm
//	devices -> firmware/aml (the AML builder, a leaf), never firmware -> devices
//
// It has no code: layering_test.go parses every file's imports and fails on
// an edge the rules forbid; gomod_test.go runs `go mod tidy -diff`;
// testdata_test.go looks for a README.md in every testdata directory;
// archtags_test.go checks that the x86-only packages (machine/pc,
// machine/pcqmp, tests) carry //go:build amd64 on every file.
package layering
