package qmp

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// The human monitor (HMP) as QMP's human-monitor-command runs it: a command
// line in, the text the monitor would print out. Parsing follows QEMU 7.2's
// monitor/hmp.c (command names, get_str's quoting, its messages); the
// commands are the subset Petrel has. A command's failure is part of the
// text ("Error: ..."), never a QMP error.

// hmpCommand is one entry of QEMU's command tables (hmp-commands.hx,
// hmp-commands-info.hx).
type hmpCommand struct {
	name string // alternatives separated by '|', as "cont|c"
	// arg is the key of the one argument, kind its type: 's' a string
	// (get_str), 'S' the rest of the line; optional is QEMU's '?'.
	arg      string
	kind     byte
	optional bool
	// params and help are the two halves of the command's help line.
	params string
	help   string
	// run executes the command, printing into w; arg is nil when an
	// optional argument was not given.
	run func(s *Server, w *strings.Builder, arg *string)
	// sub is the table of subcommands ("info status"); run is then what
	// the bare command does.
	sub []*hmpCommand
}

// hmpTable and hmpInfoTable are the top-level and "info" commands, in the
// order help lists them.
var hmpTable, hmpInfoTable []*hmpCommand

func init() {
	hmpInfoTable = []*hmpCommand{
		{name: "status", help: "show the current VM status (running|paused)", run: hmpInfoStatus},
		{name: "snapshots", help: "show the currently saved VM snapshots", run: hmpInfoSnapshots},
	}
	hmpTable = []*hmpCommand{
		{name: "help|?", arg: "name", kind: 'S', optional: true, params: "[cmd]", help: "show the help",
			run: func(_ *Server, w *strings.Builder, name *string) { hmpHelp(w, name) }},
		{name: "stop|s", help: "stop emulation",
			run: func(s *Server, _ *strings.Builder, _ *string) { _ = s.m.Stop() }},
		{name: "cont|c", help: "resume emulation",
			run: func(s *Server, w *strings.Builder, _ *string) { hmpError(w, s.m.Cont()) }},
		{name: "savevm", arg: "name", kind: 's', optional: true, params: "tag",
			help: "save a VM snapshot. If no tag is provided, a new snapshot is created", run: hmpSaveVM},
		{name: "loadvm", arg: "name", kind: 's', params: "tag", help: "restore a VM snapshot from its tag",
			run: func(s *Server, w *strings.Builder, name *string) {
				hmpError(w, s.snapshotOp(func() error { return s.m.LoadVM(SnapshotRequest{Tag: *name}) }))
			}},
		{name: "delvm", arg: "name", kind: 's', params: "tag", help: "delete a VM snapshot from its tag",
			run: func(s *Server, w *strings.Builder, name *string) {
				hmpError(w, s.snapshotOp(func() error { return s.m.DeleteVM(SnapshotRequest{Tag: *name}) }))
			}},
		{name: "info|i", arg: "item", kind: 's', optional: true, params: "[subcommand]",
			help: "show various information about the system state", sub: hmpInfoTable,
			run: func(_ *Server, w *strings.Builder, _ *string) { info := "info"; hmpHelp(w, &info) }},
	}
}

// hmpCommands is human-monitor-command. cpu-index is accepted (a
// negative one refused as QEMU does) and otherwise ignored.
func hmpCommands() map[string]*command {
	return map[string]*command{
		"human-monitor-command": {
			args:     map[string]argType{"command-line": tStr, "cpu-index": tInt},
			fields:   []string{"command-line", "cpu-index"},
			required: []string{"command-line"},
			run: func(s *Server, a map[string]any) (any, func(), error) {
				if n, ok := a["cpu-index"]; ok {
					// The CPU only matters to commands Petrel lacks.
					if i, _ := n.(json.Number).Int64(); i < 0 {
						return nil, nil, Errorf("Parameter 'cpu-index' expects a CPU number")
					}
				}
				return s.HMP(a["command-line"].(string)), nil, nil
			},
		},
	}
}

// HMP runs one human monitor command line and returns what it prints.
func (s *Server) HMP(line string) string {
	// QEMU reads the line as a C string.
	if i := strings.IndexByte(line, 0); i >= 0 {
		line = line[:i]
	}
	var w strings.Builder
	cmd, rest := hmpLookup(&w, line, line, hmpTable)
	if cmd == nil {
		return w.String()
	}
	arg, ok := hmpParseArg(&w, cmd, rest)
	if !ok {
		at := strings.TrimRight(line[:len(line)-len(rest)], hmpSpace)
		fmt.Fprintf(&w, "Try \"help %s\" for more information\n", at)
		return w.String()
	}
	cmd.run(s, &w, arg)
	return w.String()
}

// hmpSpace is C's isspace.
const hmpSpace = " \t\n\v\f\r"

// hmpLookup finds the command at the start of p in table, descending into
// a sub-table when words follow, as monitor_parse_command. It returns the
// line after the name and its following white space, or nil (and prints
// QEMU's message when a word names no command).
func hmpLookup(w *strings.Builder, line, p string, table []*hmpCommand) (*hmpCommand, string) {
	p = strings.TrimLeft(p, hmpSpace)
	if p == "" {
		return nil, ""
	}
	end := strings.IndexAny(p, hmpSpace+"/")
	if end < 0 {
		end = len(p)
	}
	name, rest := p[:end], p[end:]
	cmd := hmpFind(table, name)
	if cmd == nil {
		fmt.Fprintf(w, "unknown command: '%s'\n", line[:len(line)-len(rest)])
		return nil, ""
	}
	rest = strings.TrimLeft(rest, hmpSpace)
	if cmd.sub != nil && rest != "" {
		return hmpLookup(w, line, rest, cmd.sub)
	}
	return cmd, rest
}

// hmpFind matches name against each command's '|'-separated names.
func hmpFind(table []*hmpCommand, name string) *hmpCommand {
	for _, c := range table {
		for _, n := range strings.Split(c.name, "|") {
			if n == name {
				return c
			}
		}
	}
	return nil
}

// hmpParseArg reads cmd's argument from p and checks that nothing follows,
// as monitor_parse_arguments; nil is an absent optional argument.
func hmpParseArg(w *strings.Builder, cmd *hmpCommand, p string) (*string, bool) {
	var arg *string
	p = strings.TrimLeft(p, hmpSpace)
	switch {
	case cmd.kind == 0 || (cmd.optional && p == ""):
	case cmd.kind == 'S':
		rest := p
		arg, p = &rest, ""
	default:
		v, rest, ok := hmpString(p)
		if !ok {
			fmt.Fprintf(w, "%s: string expected\n", cmd.name)
			return nil, false
		}
		arg, p = &v, rest
	}
	if strings.TrimLeft(p, hmpSpace) != "" {
		fmt.Fprintf(w, "%s: extraneous characters at the end of line\n", cmd.name)
		return nil, false
	}
	return arg, true
}

// hmpMaxArgs is how many words help reads (QEMU's MAX_ARGS).
const hmpMaxArgs = 16

// hmpMaxString is the size of QEMU's argument buffer, less its NUL: longer
// arguments are cut.
const hmpMaxString = 1023

// hmpString reads one word as QEMU's get_str: up to white space, or a
// string in double quotes with the escapes \n \r \\ \' \". A bad escape or
// a missing closing quote fails (QEMU says why on its stdout only).
func hmpString(p string) (val, rest string, ok bool) {
	p = strings.TrimLeft(p, hmpSpace)
	if p == "" {
		return "", p, false
	}
	var b []byte
	add := func(c byte) {
		if len(b) < hmpMaxString {
			b = append(b, c)
		}
	}
	if p[0] != '"' {
		i := 0
		for i < len(p) && !strings.ContainsRune(hmpSpace, rune(p[i])) {
			add(p[i])
			i++
		}
		return string(b), p[i:], true
	}
	i := 1
	for i < len(p) && p[i] != '"' {
		c := p[i]
		i++
		if c == '\\' {
			if i == len(p) {
				return "", "", false
			}
			c = p[i]
			i++
			switch c {
			case 'n':
				c = '\n'
			case 'r':
				c = '\r'
			case '\\', '\'', '"':
			default:
				return "", "", false
			}
		}
		add(c)
	}
	if i == len(p) {
		return "", "", false
	}
	return string(b), p[i+1:], true
}

// hmpHelp prints the help of the commands name selects (all when nil), as
// QEMU's help_cmd: "NAME PARAMS -- HELP" per command.
func hmpHelp(w *strings.Builder, name *string) {
	var words []string
	if name != nil {
		for p := *name; strings.TrimLeft(p, hmpSpace) != ""; {
			v, rest, ok := hmpString(p)
			if !ok || len(words) == hmpMaxArgs {
				return
			}
			words, p = append(words, v), rest
		}
	}
	table := hmpTable
	for i := 0; ; i++ {
		if i == len(words) {
			for _, c := range table {
				hmpHelpLine(w, words, c)
			}
			return
		}
		c := hmpFind(table, words[i])
		switch {
		case c == nil:
			fmt.Fprintf(w, "unknown command: '%s'\n", strings.Join(words[:i+1], " "))
			return
		case c.sub == nil:
			hmpHelpLine(w, words[:i], c)
			return
		}
		table = c.sub
	}
}

// hmpHelpLine prints one command's help line, "info status  -- ..." style,
// prefix being the words of the enclosing commands.
func hmpHelpLine(w *strings.Builder, prefix []string, c *hmpCommand) {
	for _, p := range prefix {
		w.WriteString(p + " ")
	}
	fmt.Fprintf(w, "%s %s -- %s\n", c.name, c.params, c.help)
}

// hmpError prints a failed command's error as QEMU's hmp_handle_error.
func hmpError(w *strings.Builder, err error) {
	if err != nil {
		fmt.Fprintf(w, "Error: %s\n", errorText(err))
	}
}

// hmpSaveVM is savevm: it replaces a snapshot of the same tag; without a
// tag it names the snapshot after the local time, as QEMU.
func hmpSaveVM(s *Server, w *strings.Builder, name *string) {
	r := SnapshotRequest{Overwrite: true}
	if name != nil {
		r.Tag = *name
	} else {
		r.Tag = time.Now().Format("vm-20060102150405")
	}
	hmpError(w, s.snapshotOp(func() error { return s.m.SaveVM(r) }))
}

// hmpInfoStatus is info status: "paused" carries the run state when the
// VM is stopped for another reason than a stop.
func hmpInfoStatus(s *Server, w *strings.Builder, _ *string) {
	switch st := s.m.Status(); st {
	case "running", "paused":
		fmt.Fprintf(w, "VM status: %s\n", st)
	default:
		fmt.Fprintf(w, "VM status: paused (%s)\n", st)
	}
}

// hmpInfoSnapshots is info snapshots.
func hmpInfoSnapshots(s *Server, w *strings.Builder, _ *string) {
	var snaps []VMSnapshot
	err := s.snapshotOp(func() (err error) {
		snaps, err = s.m.VMSnapshots()
		return err
	})
	if err != nil {
		hmpError(w, err)
		return
	}
	writeSnapshots(w, snaps, time.Local)
}
