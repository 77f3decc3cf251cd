package qmp

import (
	"regexp"
	"strings"
	"testing"
	"time"

	goqmp "github.com/digitalocean/go-qemu/qmp"
	"github.com/digitalocean/go-qemu/qmp/raw"
)

func TestHMPCommands(t *testing.T) {
	m := newRec()
	s := NewServer(m)
	m.srv = s
	try := func(cmd string) string { return `Try "help ` + cmd + `" for more information` + "\n" }
	for _, tc := range []struct {
		line, out string
		req       string // the machine's request, if any
	}{
		{"savevm snap1", "", `save tag="snap1" vmstate="" devices=nil overwrite=true`},
		{`savevm "my snap"`, "", `save tag="my snap" vmstate="" devices=nil overwrite=true`},
		{`  savevm	"a\"b\\c\n\r\'"  `, "", `save tag="a\"b\\c\n\r'" vmstate="" devices=nil overwrite=true`},
		{"savevm x\x00 y", "", `save tag="x" vmstate="" devices=nil overwrite=true`},
		{`savevm "bad\x"`, "savevm: string expected\n" + try("savevm"), ""},
		{`savevm "unterminated`, "savevm: string expected\n" + try("savevm"), ""},
		{`savevm "trailing\`, "savevm: string expected\n" + try("savevm"), ""},
		{"savevm a b", "savevm: extraneous characters at the end of line\n" + try("savevm"), ""},
		{"  savevm   a b", "savevm: extraneous characters at the end of line\n" + try("  savevm"), ""},
		{"loadvm", "loadvm: string expected\n" + try("loadvm"), ""},
		{"loadvm   ", "loadvm: string expected\n" + try("loadvm"), ""},
		{"loadvm snap1", "", `load tag="snap1" vmstate="" devices=nil overwrite=false`},
		{"loadvm nope", "Error: Snapshot 'nope' does not exist in one or more devices\n", `load tag="nope" vmstate="" devices=nil overwrite=false`},
		{"delvm", "delvm: string expected\n" + try("delvm"), ""},
		{"delvm snap1", "", `delete tag="snap1" vmstate="" devices=nil overwrite=false`},
		{"", "", ""},
		{"   ", "", ""},
		{"frob", "unknown command: 'frob'\n", ""},
		{"  frob  x", "unknown command: '  frob'\n", ""},
		// A name ends at '/' too (x/fmt); the rest is savevm's argument.
		{"savevm/x", "", `save tag="/x" vmstate="" devices=nil overwrite=true`},
		{"SAVEVM", "unknown command: 'SAVEVM'\n", ""},
		{"info frob", "unknown command: 'info frob'\n", ""},
		{"i  frob x", "unknown command: 'i  frob'\n", ""},
		{"info status x", "status: extraneous characters at the end of line\n" + try("info status"), ""},
		{"cont now", "cont|c: extraneous characters at the end of line\n" + try("cont"), ""},
		{"info status", "VM status: running\n", ""},
		{"stop", "", ""},
		{"info status", "VM status: paused\n", ""},
		{"c", "", ""},
		{"i status", "VM status: running\n", ""},
		{"s", "", ""},
		{"cont", "", ""},
		{"info", "info status  -- show the current VM status (running|paused)\n" +
			"info snapshots  -- show the currently saved VM snapshots\n", ""},
		{"help savevm", "savevm tag -- save a VM snapshot. If no tag is provided, a new snapshot is created\n", ""},
		{"? info snapshots", "info snapshots  -- show the currently saved VM snapshots\n", ""},
		{"help info nope", "unknown command: 'info nope'\n", ""},
		{"help nope", "unknown command: 'nope'\n", ""},
	} {
		if out := s.HMP(tc.line); out != tc.out {
			t.Errorf("%q: output %q, want %q", tc.line, out, tc.out)
		}
		reqs := m.takeReqs()
		if (tc.req == "" && len(reqs) != 0) || (tc.req != "" && (len(reqs) != 1 || reqs[0] != tc.req)) {
			t.Errorf("%q: machine requests %q, want %q", tc.line, reqs, tc.req)
		}
	}
	if got := m.Status(); got != "running" {
		t.Fatalf("status %s after cont", got)
	}

	// savevm without a tag names the snapshot after the local time.
	before := time.Now().Add(-time.Second)
	if out := s.HMP("savevm"); out != "" {
		t.Fatal(out)
	}
	reqs := m.takeReqs()
	tag := regexp.MustCompile(`tag="(vm-\d{14})"`).FindStringSubmatch(strings.Join(reqs, ""))
	if tag == nil {
		t.Fatalf("savevm without tag: %q", reqs)
	}
	if at, err := time.ParseInLocation("vm-20060102150405", tag[1], time.Local); err != nil || at.Before(before.Truncate(time.Second)) || at.After(time.Now()) {
		t.Fatalf("generated tag %s: %v", tag[1], err)
	}

	// A tag longer than QEMU's argument buffer is cut.
	s.HMP("savevm " + strings.Repeat("a", 2000))
	if r := m.takeReqs(); len(r) != 1 || !strings.Contains(r[0], `"`+strings.Repeat("a", hmpMaxString)+`"`) {
		t.Fatalf("long tag: %.80q", r)
	}
}

// TestInfoSnapshotsGolden compares info snapshots with QEMU 7.2's table:
// the expected text was printed by another printf with the format strings
// of bdrv_snapshot_dump ("%-10s%-17s%8s%20s%13s%11s" for the header,
// "%-9s %-16s %8s%20s%13s%11s" per row), so a long tag or clock pushes the
// columns as QEMU's does.
func TestInfoSnapshotsGolden(t *testing.T) {
	date := func(s string) time.Time {
		d, err := time.Parse("2006-01-02 15:04:05", s)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	snaps := []VMSnapshot{
		{ID: "1", Tag: "snap0", VMStateSize: 2223964, Date: date("2023-01-02 03:04:05"), VMClock: 1500 * time.Millisecond},
		{ID: "2", Tag: "a-much-longer-tag-name", VMStateSize: 0, Date: date("2024-12-31 23:59:59"),
			VMClock: 100*time.Hour + 2*time.Minute + 3004*time.Millisecond},
		{ID: "7", Tag: "x", VMStateSize: 1000, Date: date("1970-01-01 00:00:00")},
	}
	want := "List of snapshots present on all disks:\n" +
		"ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT\n" +
		"--        snap0            2.12 MiB 2023-01-02 03:04:05 00:00:01.500           \n" +
		"--        a-much-longer-tag-name      0 B 2024-12-31 23:59:59100:02:03.004           \n" +
		"--        x                0.977 KiB 1970-01-01 00:00:00 00:00:00.000           \n"
	var w strings.Builder
	writeSnapshots(&w, snaps, time.UTC)
	if w.String() != want {
		t.Fatalf("info snapshots:\n%s\nwant:\n%s", w.String(), want)
	}
	w.Reset()
	writeSnapshots(&w, nil, time.UTC)
	if w.String() != "There is no snapshot available.\n" {
		t.Fatalf("no snapshots: %q", w.String())
	}
}

// TestGoQemuSnapshots drives snapshot-save, query-jobs, job-dismiss and
// human-monitor-command with go-qemu, a QMP client written for QEMU.
func TestGoQemuSnapshots(t *testing.T) {
	_, _, path := startServer(t)
	mon, err := goqmp.NewSocketMonitor("unix", path, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := mon.Connect(); err != nil {
		t.Fatal(err)
	}
	defer mon.Disconnect()
	evch, _ := mon.Events(nil)
	statuses := make(chan string, 16)
	go func() {
		for ev := range evch {
			if ev.Event == "JOB_STATUS_CHANGE" && ev.Data["id"] == "job0" {
				statuses <- ev.Data["status"].(string)
			}
		}
	}()
	if _, err := mon.Run([]byte(`{"execute":"snapshot-save","arguments":{"job-id":"job0","tag":"snap0","vmstate":"disk0","devices":["disk0"]}}`)); err != nil {
		t.Fatal(err)
	}
	var seen []string
	for len(seen) == 0 || seen[len(seen)-1] != "concluded" {
		select {
		case st := <-statuses:
			seen = append(seen, st)
		case <-time.After(5 * time.Second):
			t.Fatalf("job events so far: %v", seen)
		}
	}
	if strings.Join(seen, " ") != "created running waiting pending concluded" {
		t.Fatalf("job events %v", seen)
	}
	out, err := mon.Run([]byte(`{"execute":"query-jobs"}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := norm(t, string(out)); got != norm(t, `{"return":[{"id":"job0","type":"snapshot-save","status":"concluded","current-progress":1,"total-progress":1}]}`) {
		t.Fatalf("query-jobs: %s", got)
	}
	if _, err := mon.Run([]byte(`{"execute":"job-dismiss","arguments":{"id":"job0"}}`)); err != nil {
		t.Fatal(err)
	}
	text, err := raw.NewMonitor(mon).HumanMonitorCommand("info snapshots", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(text, "List of snapshots present on all disks:\nID ") || !strings.Contains(text, "\n--        snap0   ") {
		t.Fatalf("info snapshots: %q", text)
	}
}
