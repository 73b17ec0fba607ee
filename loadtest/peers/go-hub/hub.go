package main

// message is one broadcast: a WebSocket message for every subscriber of topic.
type message struct {
	topic string
	typ   int // websocket.TextMessage or websocket.BinaryMessage
	data  []byte
	// recipients, if not nil, receives how many clients the message was queued for.
	recipients chan int
}

// Hub keeps the set of subscribers of each topic and fans messages out to them.
// Everything it owns is touched only by its run goroutine.
type Hub struct {
	// Subscribers of each topic.
	topics map[string]map[*Client]bool

	// Messages to fan out.
	broadcast chan message

	// Register requests from the clients.
	register chan *Client

	// Unregister requests from clients.
	unregister chan *Client
}

func newHub() *Hub {
	return &Hub{
		topics:     make(map[string]map[*Client]bool),
		broadcast:  make(chan message),
		register:   make(chan *Client),
		unregister: make(chan *Client),
	}
}

func (h *Hub) run() {
	for {
		select {
		case client := <-h.register:
			for _, t := range client.topics {
				subs := h.topics[t]
				if subs == nil {
					subs = make(map[*Client]bool)
					h.topics[t] = subs
				}
				subs[client] = true
			}
		case client := <-h.unregister:
			h.remove(client)
		case m := <-h.broadcast:
			n := 0
			for client := range h.topics[m.topic] {
				select {
				case client.send <- m:
					n++
				default:
					// Too slow to keep up: drop it, as the chat example does.
					h.remove(client)
				}
			}
			if m.recipients != nil {
				m.recipients <- n
			}
		}
	}
}

// remove unsubscribes client from all its topics and closes its send channel, once.
func (h *Hub) remove(client *Client) {
	if client.removed {
		return
	}
	client.removed = true
	for _, t := range client.topics {
		if subs := h.topics[t]; subs != nil {
			delete(subs, client)
			if len(subs) == 0 {
				delete(h.topics, t)
			}
		}
	}
	close(client.send)
}
