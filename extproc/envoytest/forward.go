package envoytest

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
)

// forward sends the request upstream and returns the response.
func (r *run) forward(ex *Exchange, h *headerList, body []byte, trl *headerList) (int, *headerList, []byte, *headerList, error) {
	method, _ := h.get(":method")
	path, _ := h.get(":path")
	host, _ := h.get(":authority")
	hh := h.http()
	if cl, ok := h.get("content-length"); ok {
		if n, err := strconv.Atoi(cl); err != nil || n != len(body) {
			r.violate("request content-length %q does not match the %d-byte body forwarded upstream", cl, len(body))
		}
	}
	up := &UpstreamRequest{Method: method, Path: path, Header: hh.Clone(), Body: bytes.Clone(body)}
	if trl != nil {
		up.Trailers = trl.http()
	}
	r.res.Upstream = up
	var resp *http.Response
	if ex.Upstream != nil {
		req, err := http.NewRequestWithContext(r.ctx, method, "http://"+host+path, bytes.NewReader(body))
		if err != nil {
			return 0, nil, nil, nil, err
		}
		req.Header = hh
		req.Host = host
		req.ContentLength = int64(len(body))
		req.RequestURI = path
		if trl != nil {
			req.Trailer = trl.http()
		}
		rec := httptest.NewRecorder()
		ex.Upstream.ServeHTTP(rec, req)
		resp = rec.Result()
	} else {
		req, err := http.NewRequestWithContext(r.ctx, method, strings.TrimSuffix(ex.UpstreamURL, "/")+path, bytes.NewReader(body))
		if err != nil {
			return 0, nil, nil, nil, err
		}
		req.Header = hh
		req.Host = host
		// The upstream's content-encoding reaches the filter untouched.
		c := &http.Client{Transport: &http.Transport{DisableCompression: true}}
		resp, err = c.Do(req)
		if err != nil {
			return 0, nil, nil, nil, err
		}
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, nil, nil, err
	}
	rh := fromHTTP(resp.Header)
	var rt *headerList
	if len(resp.Trailer) > 0 {
		rt = fromHTTP(resp.Trailer)
	}
	return resp.StatusCode, rh, rb, rt, nil
}
