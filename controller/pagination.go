package controller

import (
	"encoding/base64"
	"encoding/json"
	"sort"
)

const (
	// defaultPageSize is a list call's page when the request names none; maxPageSize is the
	// most a reply holds, whatever it asks for. A page of 1,000 nodes is about 1.6 MB, well
	// under the 4 MiB that gRPC clients accept by default.
	defaultPageSize = 500
	maxPageSize     = 1000
)

// pageToken is what a next_page_token carries: the id of the last item sent and the filters
// the listing had, so that a token used with other filters is refused rather than skipping
// or repeating items.
type pageToken struct {
	After  string `json:"a"`
	Filter string `json:"f,omitempty"`
}

// pageRequest is a list call's page_size and page_token, checked.
type pageRequest struct {
	size   int
	after  string
	filter string
}

// parsePage checks page_size and page_token against the filter the call has (a canonical
// string of its filter fields).
func parsePage(size int32, token, filter string) (pageRequest, *fieldError) {
	p := pageRequest{size: int(size), filter: filter}
	switch {
	case size < 0:
		return p, badField("page_size", "%d is negative", size)
	case size == 0:
		p.size = defaultPageSize
	case size > maxPageSize:
		p.size = maxPageSize
	}
	if token == "" {
		return p, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	var t pageToken
	if err == nil {
		err = json.Unmarshal(b, &t)
	}
	if err != nil || t.After == "" {
		return p, badField("page_token", "is not a token this controller made (use next_page_token of the previous reply)")
	}
	if t.Filter != filter {
		return p, badField("page_token", "was made for other filters than this request's: list again from the first page")
	}
	p.after = t.After
	return p, nil
}

// page cuts one page out of keys (sorted) and returns the indices it covers and the next
// token ("" on the last page).
func (p pageRequest) page(keys []string) (from, to int, next string) {
	from = sort.SearchStrings(keys, p.after)
	if p.after != "" && from < len(keys) && keys[from] == p.after {
		from++
	}
	to = min(len(keys), from+p.size)
	if to < len(keys) {
		b, _ := json.Marshal(pageToken{After: keys[to-1], Filter: p.filter})
		next = base64.RawURLEncoding.EncodeToString(b)
	}
	return from, to, next
}
