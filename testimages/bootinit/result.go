package bootinit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// ResultPrefix starts the one machine-readable line a boot prints on the console.
const ResultPrefix = "TWINSLOT-BOOT "

// MaxResultLine bounds a result line (prefix and JSON) that ParseResult accepts.
const MaxResultLine = 16 << 10

// ErrNoResult: console output holds no result line (the init never got that far).
var ErrNoResult = errors.New("no " + strings.TrimSpace(ResultPrefix) + " line in the console output")

// Result is what one boot reports.
type Result struct {
	Slot       string  `json:"slot,omitempty"`      // label of the booted slot: "USR-B"
	Partition  int     `json:"partition,omitempty"` // its partition number
	PartUUID   string  `json:"partuuid,omitempty"`
	Priority   int     `json:"priority"`           // attributes as booted (after NextBoot's decrement)
	Tries      int     `json:"tries"`              //
	Successful bool    `json:"successful"`         //
	Version    string  `json:"version,omitempty"`  // VERSION= of the slot's /usr/lib/os-release
	Healthy    bool    `json:"healthy"`            // the health gate passed
	Committed  bool    `json:"committed"`          // MarkGood succeeded
	MarkedBad  bool    `json:"marked_bad"`         // MarkBad succeeded
	Health     string  `json:"health,omitempty"`   // the gate's summary, or why it could not run
	Uptime     float64 `json:"uptime_s,omitempty"` // seconds since the kernel started, at the end
	Error      string  `json:"error,omitempty"`    // the boot failed before or while choosing a slot, or a mark failed
}

// Line renders r as the console line (without newline).
func (r Result) Line() string {
	b, err := json.Marshal(r)
	if err != nil { // only a NaN or infinite Uptime gets here
		b, _ = json.Marshal(Result{Error: "result not encodable: " + err.Error()})
	}
	return ResultPrefix + string(b)
}

// ParseResult returns the last result line in console output.
func ParseResult(console []byte) (Result, error) {
	var last []byte
	sc := bufio.NewScanner(bytes.NewReader(console))
	sc.Buffer(make([]byte, 0, 4096), MaxResultLine+1)
	sc.Split(scanLinesLong)
	for sc.Scan() {
		line := bytes.TrimRight(sc.Bytes(), "\r")
		if i := bytes.Index(line, []byte(ResultPrefix)); i >= 0 {
			last = line[i+len(ResultPrefix):]
		}
	}
	if last == nil {
		return Result{}, ErrNoResult
	}
	var r Result
	dec := json.NewDecoder(bytes.NewReader(last))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return Result{}, fmt.Errorf("result line %.80q: %w", last, err)
	}
	if dec.More() {
		return Result{}, fmt.Errorf("result line %.80q: data after the JSON object", last)
	}
	return r, nil
}

// scanLinesLong splits like bufio.ScanLines but drops (instead of failing on) lines longer
// than MaxResultLine, so a long kernel message cannot hide the result line after it.
func scanLinesLong(data []byte, atEOF bool) (int, []byte, error) {
	adv, tok, err := bufio.ScanLines(data, atEOF)
	if adv == 0 && tok == nil && err == nil && len(data) > MaxResultLine {
		return len(data), []byte{}, nil // skip a chunk of an over-long line
	}
	return adv, tok, err
}
