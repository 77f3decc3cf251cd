// Package testutil holds helpers shared by Petrel's tests.
package testutil

import (
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
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

// Timeout is d scaled by PETREL_TEST_TIMEOUT_SCALE (a positive integer,
// default 1): the bound after which a whole-VM run counts as hung. It is
// raised where every VM exit is slow, as on nested KVM under TCG
// (scripts/test-kvm.sh), so that a slow run is not reported as a hang.
func Timeout(d time.Duration) time.Duration {
	if n, err := strconv.Atoi(os.Getenv("PETREL_TEST_TIMEOUT_SCALE")); err == nil && n > 1 {
		return d * time.Duration(n)
	}
	return d
}
