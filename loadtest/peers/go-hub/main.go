// Command go-hub is the classic gorilla/websocket chat hub, extended with topics
// and a POST /publish/{topic} endpoint. Protocol: see ../README.md.
package main

import (
	"encoding/json"
	"io"
	"log"
	"net/http"
	"os"
	"strings"

	"github.com/gorilla/websocket"
)

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	hub := newHub()
	go hub.run()

	http.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		serveWs(hub, w, r)
	})
	http.HandleFunc("/publish/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		topic := strings.TrimPrefix(r.URL.Path, "/publish/")
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		recipients := make(chan int, 1)
		hub.broadcast <- message{topic: topic, typ: websocket.TextMessage, data: body, recipients: recipients}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]int{"recipients": <-recipients})
	})

	addr := "127.0.0.1:" + port
	log.Printf("go-hub listening on %s", addr)
	log.Fatal(http.ListenAndServe(addr, nil))
}
