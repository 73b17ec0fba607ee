module hubcast.local/peers/go-hub

go 1.19

require github.com/gorilla/websocket v1.5.0

// Built offline against Debian's golang-github-gorilla-websocket-dev (1.5.0);
// see ../install.sh.
replace github.com/gorilla/websocket => /usr/share/gocode/src/github.com/gorilla/websocket
