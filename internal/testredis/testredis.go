// Package testredis runs a real redis-server for tests.
//
//	srv := testredis.Start(t)          // on a free 127.0.0.1 port, killed at cleanup
//	client := srv.Client()             // go-redis client, closed at cleanup
//	srv.Kill(); srv.Restart()          // crash and bring back on the same port
//	sen := testredis.StartSentinel(t, "mymaster", srv)
//
// The server keeps nothing on disk (--save "" --appendonly no) unless extra
// arguments say otherwise; its working directory is a t.TempDir(). A missing
// redis-server fails the test (it is not skipped): install it with
// apt-get install -y redis-server.
//
// Files: testredis.go (one server, Sentinel), cluster.go (a Cluster of
// masters with replicas), pdeathsig_linux.go and pdeathsig_other.go (the
// server dies with the test process where the OS allows).
package testredis

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	startAttempts = 5                // ports tried before giving up
	readyTimeout  = 10 * time.Second // per attempt, until PING answers
)

// Server is a running redis-server. Kill is safe from any goroutine;
// Restart and Client must be called from the test's goroutine (Restart
// may call t.Fatal).
type Server struct {
	// Addr is "127.0.0.1:port".
	Addr string

	t    testing.TB
	bin  string
	port int
	dir  string
	pre  []string // before the generated flags (a config file must come first)
	args []string

	mu   sync.Mutex
	proc *process // nil while killed
}

type process struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has exited
	out    *syncBuffer   // combined stdout and stderr, for failure messages
}

// Start runs redis-server on a free loopback port with args appended to
// its command line (e.g. "--requirepass", "secret"), waits until it
// answers PING, and registers a cleanup that kills it.
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	s := newServer(t, args)
	s.launch()
	return s
}

// StartSentinel runs a Sentinel (redis-server --sentinel) on a free
// loopback port that monitors master under masterName with quorum 1.
// Kill and Restart work as for Start.
func StartSentinel(t testing.TB, masterName string, master *Server) *Server {
	t.Helper()
	s := newServer(t, nil)
	conf := filepath.Join(s.dir, "sentinel.conf")
	body := fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d 1\n", masterName, master.port)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatalf("testredis: writing sentinel config: %v", err)
	}
	s.pre = []string{conf, "--sentinel"}
	s.launch()
	return s
}

func newServer(t testing.TB, args []string) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatal("redis-server not found: apt-get install -y redis-server")
	}
	s := &Server{t: t, bin: bin, dir: t.TempDir(), args: args}
	t.Cleanup(s.Kill)
	return s
}

// launch starts the server on a free port, trying a few ports.
func (s *Server) launch() {
	t := s.t
	t.Helper()
	var lastErr error
	for range startAttempts {
		port, err := freePort()
		if err != nil {
			t.Fatalf("testredis: finding a free port: %v", err)
		}
		s.port = port
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if lastErr = s.start(); lastErr == nil {
			return
		}
		// Most likely another process took the port; try another.
	}
	t.Fatalf("testredis: redis-server did not start after %d attempts: %v", startAttempts, lastErr)
}

// URL returns "redis://127.0.0.1:port/0".
func (s *Server) URL() string { return "redis://" + s.Addr + "/0" }

// Port returns the server's TCP port.
func (s *Server) Port() int { return s.port }

// Client returns a go-redis client for the server (database 0, no
// password), closed at cleanup.
func (s *Server) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	s.t.Cleanup(func() { _ = c.Close() })
	return c
}

// Kill stops the server with SIGKILL and waits for it to exit. Killing a
// stopped server does nothing.
func (s *Server) Kill() {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// Freeze stops the server with SIGSTOP (it keeps its connections but
// answers nothing) until Thaw; a cleanup thaws it so it can be killed.
func (s *Server) Freeze() {
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if p != nil {
		_ = p.cmd.Process.Signal(syscall.SIGSTOP)
		s.t.Cleanup(s.Thaw)
	}
}

// Thaw resumes a frozen server (SIGCONT).
func (s *Server) Thaw() {
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if p != nil {
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
	}
}

// Restart kills the server if it runs and starts it again on the same port
// with the same directory and arguments, and waits until it answers.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	var err error
	// The port was ours a moment ago; retry briefly in case it lingers.
	for i := range startAttempts {
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(time.Duration(i+1) * 50 * time.Millisecond) // back off
	}
	s.t.Fatalf("testredis: restarting redis-server on %s: %v", s.Addr, err)
}

func (s *Server) start() error {
	argv := append(append([]string{}, s.pre...),
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--logfile", "",
	)
	argv = append(argv, s.args...)
	cmd := exec.Command(s.bin, argv...)
	out := &syncBuffer{}
	cmd.Stdout = out
	cmd.Stderr = out
	setPdeathsig(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", s.bin, err)
	}
	p := &process{cmd: cmd, exited: make(chan struct{}), out: out}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	if err := waitReady(s.Addr, p); err != nil {
		_ = cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("%w; server output:\n%s", err, out.String())
	}
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
	return nil
}

// waitReady polls PING until the server answers (any reply: with
// --requirepass it is -NOAUTH), the process exits, or readyTimeout passes.
func waitReady(addr string, p *process) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		select {
		case <-p.exited:
			return fmt.Errorf("redis-server exited during start-up")
		default:
		}
		if ping(addr) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server on %s did not answer PING within %v", addr, readyTimeout)
		}
		select {
		case <-p.exited:
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func ping(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return false
	}
	// "-LOADING" means not ready yet; +PONG or -NOAUTH mean it serves.
	return strings.HasPrefix(line, "+PONG") || strings.HasPrefix(line, "-NOAUTH")
}

// freePort asks the kernel for a free loopback port. Another process may
// take it before redis-server binds it; Start retries.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.b.Len() > 64<<10 { // keep failure output bounded
		return len(p), nil
	}
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
