// Package testutil holds helpers shared by Petrel's tests.
package testutil

import (
	"os"
	"os/exec"
	"testing"
)

// NeedKVM skips the test, loudly, only when /dev/kvm cannot be opened.
func NeedKVM(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("SKIPPING: /dev/kvm cannot be opened (%v); this test needs KVM", err)
	}
	f.Close()
}

// NeedTool returns the path of an external tool. When it is missing the test
// fails under CI (CI=true, where .ci/run installs it) and skips loudly elsewhere.
func NeedTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not found: .ci/run should have installed it", name)
		}
		t.Skipf("SKIPPING: %s not installed (apt-get install the package .ci/run names)", name)
	}
	return p
}
