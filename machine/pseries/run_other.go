//go:build !(ppc64 || ppc64le)

package pseries

import "fmt"

// Run needs a POWER host: KVM runs pseries guests only on ppc64.
func Run(cfg Config) (ExitReason, error) {
	if err := cfg.check(); err != nil {
		return ExitError, err
	}
	return ExitError, fmt.Errorf("pseries: needs a ppc64 or ppc64le host with KVM (this is a different architecture)")
}
