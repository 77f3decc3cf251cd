package qmp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
)

// argType is the QAPI type of one argument.
type argType int

const (
	tStr argType = iota
	tBool
	tInt
	tObject
	tAny
	tStrList // ['str']
)

// String is the type's name as QEMU's "Invalid parameter type" message
// spells it (a list is "array").
func (t argType) String() string {
	return [...]string{"string", "boolean", "integer", "object", "any", "array"}[t]
}

// command describes one QMP command: its arguments and what it does.
type command struct {
	// args maps each argument the command takes to its type; required
	// lists those that must be present.
	args     map[string]argType
	required []string
	// fields, when set, lists every argument in the schema's order; the
	// arguments are then checked in that order, then the unexpected ones,
	// as QEMU's generated visitors do.
	fields []string
	// open allows arguments beyond args (device_add's properties), which
	// the handler checks itself.
	open bool
	// run executes the command with checked arguments (numbers as
	// json.Number). ret is the "return" value (nil means {}); after, if not
	// nil, runs once the reply is written, for work the client must see
	// only after the reply (quit's SHUTDOWN, a job's start); an *Error
	// err chooses the error class. nil only for qmp_capabilities, which
	// handle answers itself.
	run func(s *Server, args map[string]any) (ret any, after func(), err error)
}

// commandTable holds every command by name. It is built by init and only
// read afterwards, so connections share it without a lock.
var commandTable map[string]*command

// init builds commandTable; query-commands reads the table itself, so it
// cannot be a composite literal initialiser (an initialisation cycle).
func init() {
	commandTable = map[string]*command{
		"qmp_capabilities": {args: map[string]argType{"enable": tAny}},
		"query-commands": {run: func(*Server, map[string]any) (any, func(), error) {
			var names []map[string]string
			for n := range commandTable {
				names = append(names, map[string]string{"name": n})
			}
			sort.Slice(names, func(i, j int) bool { return names[i]["name"] < names[j]["name"] })
			return names, nil, nil
		}},
		"query-version": {run: func(*Server, map[string]any) (any, func(), error) {
			return map[string]any{
				"qemu":    map[string]int{"major": Version.Major, "minor": Version.Minor, "micro": Version.Micro},
				"package": "petrel",
			}, nil, nil
		}},
		"query-status": {run: func(s *Server, _ map[string]any) (any, func(), error) {
			st := s.m.Status()
			return map[string]any{"status": st, "running": st == "running", "singlestep": false}, nil, nil
		}},
		"query-pci": {run: func(s *Server, _ map[string]any) (any, func(), error) {
			return s.m.QueryPCI(), nil, nil
		}},
		"query-block": {run: func(s *Server, _ map[string]any) (any, func(), error) {
			b := s.m.QueryBlock()
			if b == nil {
				b = []BlockInfo{}
			}
			return b, nil, nil
		}},
		"stop": {run: func(s *Server, _ map[string]any) (any, func(), error) {
			return nil, nil, s.m.Stop()
		}},
		"cont": {run: func(s *Server, _ map[string]any) (any, func(), error) {
			return nil, nil, s.m.Cont()
		}},
		"system_powerdown": {run: func(s *Server, _ map[string]any) (any, func(), error) {
			return nil, nil, s.m.PowerDown()
		}},
		"quit": {run: func(s *Server, _ map[string]any) (any, func(), error) {
			// Reply first, then stop: the client sees the return, then SHUTDOWN.
			return nil, func() {
				s.Emit("SHUTDOWN", map[string]any{"guest": false, "reason": "host-qmp-quit"})
				s.m.Quit()
			}, nil
		}},
		"device_add": {
			args:     map[string]argType{"driver": tStr, "id": tStr, "bus": tStr, "addr": tAny},
			required: []string{"driver"},
			open:     true,
			run:      runDeviceAdd,
		},
		"device_del": {
			args:     map[string]argType{"id": tStr},
			required: []string{"id"},
			run: func(s *Server, a map[string]any) (any, func(), error) {
				return nil, nil, s.m.DeviceDel(a["id"].(string))
			},
		},
		"blockdev-add": {
			args: map[string]argType{"driver": tStr, "node-name": tStr, "file": tAny,
				"read-only": tBool, "cache": tObject, "discard": tStr, "auto-read-only": tBool},
			required: []string{"driver", "node-name", "file"},
			run:      runBlockdevAdd,
		},
		"query-rx-filter": {
			args: map[string]argType{"name": tStr},
			run: func(s *Server, a map[string]any) (any, func(), error) {
				name, _ := a["name"].(string)
				r, err := s.m.QueryRxFilter(name)
				if r == nil {
					r = []RxFilterInfo{}
				}
				return r, nil, err
			},
		},
		"netdev_add": {
			args:     map[string]argType{"type": tStr, "id": tStr},
			required: []string{"type", "id"},
			open:     true,
			run:      runNetdevAdd,
		},
		"netdev_del": {
			args:     map[string]argType{"id": tStr},
			required: []string{"id"},
			run: func(s *Server, a map[string]any) (any, func(), error) {
				return nil, nil, s.m.NetdevDel(a["id"].(string))
			},
		},
		"blockdev-del": {
			args:     map[string]argType{"node-name": tStr},
			required: []string{"node-name"},
			run: func(s *Server, a map[string]any) (any, func(), error) {
				return nil, nil, s.m.BlockdevDel(a["node-name"].(string))
			},
		},
	}
	for _, more := range []map[string]*command{jobCommands(), snapshotCommands(), hmpCommands()} {
		for name, c := range more {
			commandTable[name] = c
		}
	}
}

// handle answers one message. after, when set, runs once the reply has been
// written (or its write has failed).
func (s *Server) handle(c *conn, msg []byte) (reply any, after func()) {
	var top map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(msg))
	dec.UseNumber()
	if err := dec.Decode(&top); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) {
			return errorReply(nil, &Error{ClassGeneric, "QMP input must be a JSON object"}), nil
		}
		return errorReply(nil, &Error{ClassGeneric, "JSON parse error, " + err.Error()}), nil
	}
	if top == nil {
		return errorReply(nil, &Error{ClassGeneric, "QMP input must be a JSON object"}), nil
	}
	id := top["id"]
	for k := range top {
		switch k {
		case "execute", "arguments", "id", "control":
		default:
			return errorReply(id, &Error{ClassGeneric, fmt.Sprintf("QMP input member '%s' is unexpected", k)}), nil
		}
	}
	rawExec, ok := top["execute"]
	if !ok {
		return errorReply(id, &Error{ClassGeneric, "QMP input lacks member 'execute'"}), nil
	}
	var name string
	if json.Unmarshal(rawExec, &name) != nil {
		return errorReply(id, &Error{ClassGeneric, "QMP input member 'execute' must be a string"}), nil
	}
	args := map[string]any{}
	if raw, ok := top["arguments"]; ok {
		d := json.NewDecoder(bytes.NewReader(raw))
		d.UseNumber()
		if d.Decode(&args) != nil || args == nil {
			return errorReply(id, &Error{ClassGeneric, "QMP input member 'arguments' must be an object"}), nil
		}
	}
	if !c.negotiated {
		if name != "qmp_capabilities" {
			return errorReply(id, &Error{ClassCommandNotFound, "Expecting capabilities negotiation with 'qmp_capabilities'"}), nil
		}
	} else if name == "qmp_capabilities" {
		return errorReply(id, &Error{ClassCommandNotFound, "Capabilities negotiation is already complete, command ignored"}), nil
	}
	cmd, ok := commandTable[name]
	if !ok {
		return errorReply(id, &Error{ClassCommandNotFound, fmt.Sprintf("The command %s has not been found", name)}), nil
	}
	if err := checkArgs(cmd, args); err != nil {
		return errorReply(id, err), nil
	}
	if name == "qmp_capabilities" {
		c.negotiated = true
		return okReply(id, nil), func() {
			c.wmu.Lock()
			c.evOn = true
			c.wmu.Unlock()
		}
	}
	ret, after, err := cmd.run(s, args)
	if err != nil {
		var qe *Error
		if !errors.As(err, &qe) {
			qe = &Error{ClassGeneric, err.Error()}
		}
		return errorReply(id, qe), nil
	}
	return okReply(id, ret), after
}

// checkArgs validates arguments against the command's table, with QEMU's
// wording.
func checkArgs(cmd *command, args map[string]any) *Error {
	if cmd.fields != nil {
		return checkFields(cmd, args)
	}
	for k, v := range args {
		t, known := cmd.args[k]
		if !known {
			if cmd.open {
				continue
			}
			return &Error{ClassGeneric, fmt.Sprintf("Parameter '%s' is unexpected", k)}
		}
		if err := typeError(k, v, t); err != nil {
			return err
		}
	}
	for _, k := range cmd.required {
		if _, ok := args[k]; !ok {
			return &Error{ClassGeneric, fmt.Sprintf("Parameter '%s' is missing", k)}
		}
	}
	return nil
}

// checkFields checks the arguments of a command with declared fields in
// QEMU's order: each field in turn (missing, then type), then the first
// unexpected argument by name.
func checkFields(cmd *command, args map[string]any) *Error {
	for _, k := range cmd.fields {
		v, ok := args[k]
		if !ok {
			if slices.Contains(cmd.required, k) {
				return &Error{ClassGeneric, fmt.Sprintf("Parameter '%s' is missing", k)}
			}
			continue
		}
		if err := typeError(k, v, cmd.args[k]); err != nil {
			return err
		}
	}
	var extra []string
	for k := range args {
		if _, known := cmd.args[k]; !known {
			extra = append(extra, k)
		}
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		return &Error{ClassGeneric, fmt.Sprintf("Parameter '%s' is unexpected", extra[0])}
	}
	return nil
}

// typeError reports an argument k of the wrong type; a list names the
// element ("devices[1]").
func typeError(k string, v any, t argType) *Error {
	bad := func(k string, t argType) *Error {
		return &Error{ClassGeneric, fmt.Sprintf("Invalid parameter type for '%s', expected: %s", k, t)}
	}
	if t == tStrList {
		l, ok := v.([]any)
		if !ok {
			return bad(k, t)
		}
		for i, e := range l {
			if !hasType(e, tStr) {
				return bad(fmt.Sprintf("%s[%d]", k, i), tStr)
			}
		}
		return nil
	}
	if !hasType(v, t) {
		return bad(k, t)
	}
	return nil
}

// hasType reports whether a decoded JSON value has type t: an integer is a
// json.Number that fits int64 (so 1.0 and 1e3 are not integers, as in
// QEMU); tAny accepts anything.
func hasType(v any, t argType) bool {
	switch t {
	case tStr:
		_, ok := v.(string)
		return ok
	case tBool:
		_, ok := v.(bool)
		return ok
	case tInt:
		n, ok := v.(json.Number)
		if !ok {
			return false
		}
		_, err := n.Int64()
		return err == nil
	case tObject:
		_, ok := v.(map[string]any)
		return ok
	}
	return true
}
