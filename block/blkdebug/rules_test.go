package blkdebug

import (
	"errors"
	"syscall"
	"testing"

	"github.com/petrel-vmm/petrel/block"
)

func mustParse(t *testing.T, conf string) *injector {
	t.Helper()
	c, err := ParseConfig([]byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	return newInjector(c.rules)
}

func errnoOfCheck(err error) syscall.Errno {
	var e *Error
	if errors.As(err, &e) {
		return e.Errno
	}
	return 0
}

// A rule acts only after its event; "once" fires one request; a rule for
// another state waits until set-state moves there.
func TestRuleSemantics(t *testing.T) {
	inj := mustParse(t, `
# comment
[inject-error]
event = "l2_update"
errno = "28"
once = "on"

[set-state]
event = "l1_update"
new_state = "2"

[inject-error]
event = "read_aio"
state = "2"
sector = "8"
`)
	if err := inj.check(0, 512, ioWrite); err != nil {
		t.Fatalf("before any event: %v", err)
	}
	inj.event(block.EventL2Update)
	if e := errnoOfCheck(inj.check(0, 512, ioWrite)); e != syscall.ENOSPC {
		t.Fatalf("after l2_update: errno %d, want ENOSPC", e)
	}
	if err := inj.check(0, 512, ioWrite); err != nil {
		t.Fatalf("a once rule fired twice: %v", err)
	}
	inj.event(block.EventReadAIO) // state 1: the state-2 rule stays inactive
	if err := inj.check(4096, 512, ioRead); err != nil {
		t.Fatalf("rule of state 2 fired in state 1: %v", err)
	}
	inj.event(block.EventL1Update)
	inj.event(block.EventReadAIO)
	if err := inj.check(0, 4096, ioRead); err != nil {
		t.Fatalf("request outside the rule's sector failed: %v", err)
	}
	if e := errnoOfCheck(inj.check(4096, 512, ioRead)); e != syscall.EIO {
		t.Fatalf("request over sector 8: errno %d, want EIO (the default)", e)
	}
	if err := inj.check(4096, 0, ioBlockStatus); err != nil {
		t.Fatalf("block status failed without iotype=block-status: %v", err)
	}
}

// "none" rules are active from the start; iotype restricts them.
func TestNoneEventAndIOType(t *testing.T) {
	inj := mustParse(t, "[inject-error]\nevent = \"none\"\niotype = \"block-status\"\nsector = \"1\"\n")
	if e := errnoOfCheck(inj.check(0, 1024, ioBlockStatus)); e != syscall.EIO {
		t.Fatalf("block status over sector 1: errno %d", e)
	}
	if err := inj.check(0, 1024, ioRead); err != nil {
		t.Fatalf("read failed under an iotype=block-status rule: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, conf := range []string{
		"[inject-error]\nerrno = \"5\"\n",                    // no event
		"[inject-error]\nevent = \"nosuch\"\n",               // unknown event
		"[bogus]\nevent = \"l1_update\"\n",                   // unknown section
		"event = \"l1_update\"\n",                            // key outside a section
		"[inject-error]\nevent = \"l1_update\"\nx = \"1\"\n", // unknown key
		"[inject-error]\nevent = \"l1_update\"\nerrno = \"-1\"\n",
		"[inject-error]\nevent = \"l1_update\"\niotype = \"x\"\n",
		"[inject-error]\nevent = \"l1_update\"\nonce = \"maybe\"\n",
	} {
		if _, err := ParseConfig([]byte(conf)); err == nil {
			t.Errorf("accepted %q", conf)
		}
	}
}

// FuzzParseConfig: any rules file either parses or is refused with an
// error; a parsed one drives the injector without panicking.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("[inject-error]\nevent = \"read_aio\"\nerrno = \"5\"\nonce =\"off\"\n"))
	f.Add([]byte("[set-state]\nevent = \"l1_update\"\nstate = \"1\"\nnew_state = \"2\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig(data)
		if err != nil {
			return
		}
		inj := newInjector(c.rules)
		for e := block.DebugEvent(0); e <= block.EventNone; e++ {
			inj.event(e)
			_ = inj.check(int64(e)*512, 4096, ioType(int(e)%6))
		}
	})
}
