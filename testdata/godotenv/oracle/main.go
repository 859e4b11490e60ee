// Prints what joho/godotenv (the version in go.mod) makes of each `.env` text of a case
// list: reads `[{"in": "..."}, ...]` on stdin, writes the same list with each case's
// "map" (godotenv.Unmarshal's variables) or "err" (its error, or a panic). See ../README.md.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/joho/godotenv"
)

type result struct {
	In  string            `json:"in"`
	Map map[string]string `json:"map,omitempty"`
	Err string            `json:"err,omitempty"`
}

func main() {
	var cases []result
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		panic(err)
	}
	for i := range cases {
		cases[i] = unmarshal(cases[i].In)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", " ")
	if err := enc.Encode(cases); err != nil {
		panic(err)
	}
}

func unmarshal(in string) (r result) {
	r.In = in
	defer func() {
		if p := recover(); p != nil {
			r.Map, r.Err = nil, fmt.Sprint("panic: ", p)
		}
	}()
	m, err := godotenv.Unmarshal(in)
	if err != nil {
		r.Err = err.Error()
	} else {
		r.Map = m
	}
	return r
}
