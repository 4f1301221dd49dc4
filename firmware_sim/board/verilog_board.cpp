// The Verilog-backed simulated board: the unit's generated Verilog, compiled by Verilator,
// talking 8N1 on its uart_rx / uart_tx pins to a byte stream on one file descriptor.
//
// Built by metaplast.firmware_sim.board.verilog_board (with --prefix Vunit, top metaplast_unit)
// and run as   harness --fd N --divisor D
// where N is a pty master or a socket. Bytes read from N are driven into uart_rx bit by bit,
// back to back, D clocks a bit; the bits on uart_tx are decoded (sampled mid-bit) and written
// to N. prog_busy is tied low, so the programming port never waits (as on the Amaranth-backed
// board). When nothing is on the line and the design's whole state no longer changes from one
// clock to the next, the harness sleeps in poll() until the host writes again: an idle board
// costs no CPU. It exits when the peer closes a socket (end of file).
//
// Built with METAPLAST_XBAR (a unit with the crossbar port, DigitalUnitTop(..., crossbar=T))
// it runs as   harness --fd N --divisor D --port M
// where M is a SOCK_SEQPACKET socket to the array's driver (the Python process that started
// the harness). Each programming strobe becomes an operation (prog_addr u32 LE, prog_device u8,
// prog_level u8) in an XBAR_PROGRAM message; each request on the command channel, op and
// payload up to its last byte, an XBAR_REQUEST message (the operations before it are sent
// first, so the driver has them). The harness then waits for the reply message (status and
// payload) and streams it into the port, valid/ready. The message tags come as macros from
// verilog_board.py. The harness exits when the driver's socket closes, and with its parent.

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#ifdef METAPLAST_XBAR
#include <csignal>
#include <sys/prctl.h>
#include <sys/socket.h>
#endif

#include "Vunit.h"
#include "Vunit___024root.h"
#include "verilated.h"

namespace {

constexpr long QUIET_BITS = 200;   // bit times with no byte either way before idling is checked
constexpr long POLL_EVERY = 256;   // clocks between looks at the descriptor while busy

#ifdef METAPLAST_XBAR
// the command channel's ports: Verilator spells the double underscores of Amaranth's names
// ("xbar__request__ready") as "___05F"
#define REQUEST_VALID xbar___05Frequest___05Fvalid
#define REQUEST_READY xbar___05Frequest___05Fready
#define REQUEST_PAYLOAD xbar___05Frequest___05Fpayload
#define REPLY_VALID xbar___05Freply___05Fvalid
#define REPLY_READY xbar___05Freply___05Fready
#define REPLY_PAYLOAD xbar___05Freply___05Fpayload

constexpr std::size_t OPERATION_BYTES = 6;      // prog_addr u32, prog_device u8, prog_level u8
constexpr std::size_t OPERATIONS_PER_MESSAGE = 4096;

// The array's driver at the other end of a socket: the crossbar port's two halves.
struct Driver {
    int fd = -1;
    std::vector<unsigned char> operations{XBAR_PROGRAM};  // strobes not yet sent
    std::vector<unsigned char> request;                   // op and payload so far
    bool complete = false;                                // the request's last byte is in
    std::deque<unsigned char> reply;                      // status and payload still to give
    std::vector<unsigned char> buffer = std::vector<unsigned char>(1 << 20);

    [[noreturn]] static void gone() {
        std::fprintf(stderr, "verilog board: the array driver closed its socket\n");
        std::exit(1);
    }

    void send(const std::vector<unsigned char>& message) const {
        ssize_t n;
        while ((n = ::send(fd, message.data(), message.size(), MSG_NOSIGNAL)) < 0 &&
               errno == EINTR) {
        }
        if (n != static_cast<ssize_t>(message.size())) gone();
    }

    void operation(unsigned addr, unsigned device, unsigned level) {
        for (int i = 0; i < 4; ++i) operations.push_back((addr >> (8 * i)) & 0xffu);
        operations.push_back(device & 0xffu);
        operations.push_back(level & 0xffu);
        if (operations.size() > OPERATIONS_PER_MESSAGE * OPERATION_BYTES) flush();
    }

    void flush() {
        if (operations.size() == 1) return;
        send(operations);
        operations.resize(1);
    }

    // Hand the complete request to the driver and wait for its reply.
    void serve() {
        flush();
        request.insert(request.begin(), XBAR_REQUEST);
        send(request);
        request.clear();
        complete = false;
        ssize_t n;
        while ((n = ::recv(fd, buffer.data(), buffer.size(), 0)) < 0 && errno == EINTR) {
        }
        if (n <= 0) gone();
        reply.assign(buffer.begin(), buffer.begin() + n);
    }

    bool idle() const { return request.empty() && !complete && reply.empty(); }
};
#endif

struct Board {
    std::unique_ptr<VerilatedContext> context{new VerilatedContext};
    std::unique_ptr<Vunit> unit{new Vunit{context.get()}};
    int fd;
    int divisor;
    std::deque<unsigned char> inbox;
    std::vector<unsigned char> outbox;
    // host -> unit: the byte being driven (start, 8 data, stop bits, LSB first)
    unsigned shift = 0;
    int bits_left = 0;
    int bit_clocks = 0;
    // unit -> host: the decoder's state (0 idle, 1 start bit, 2 data bits, 3 stop bit)
    int rx_state = 0;
    int rx_count = 0;
    int rx_bit = 0;
    unsigned rx_byte = 0;
    long quiet = 0;  // clocks since the last byte in either direction
    bool closed = false;
#ifdef METAPLAST_XBAR
    Driver driver;
#endif

    Board(int fd_, int divisor_) : fd(fd_), divisor(divisor_) {}

    void tick() {
        unit->clk = 0;
        unit->eval();
#ifdef METAPLAST_XBAR
        edge();
#endif
        unit->clk = 1;
        unit->eval();
    }

#ifdef METAPLAST_XBAR
    // The port's inputs for the next clock: ready for a request while no reply is due, the
    // reply's next byte (``last`` on its final one).
    void drive_port() {
        if (driver.complete) driver.serve();
        unit->REQUEST_READY = driver.reply.empty();
        unit->REPLY_VALID = !driver.reply.empty();
        unit->REPLY_PAYLOAD =
            driver.reply.empty()
                ? 0u
                : driver.reply.front() | (driver.reply.size() == 1 ? 0x100u : 0u);
    }

    // What crosses at this rising edge: a strobe, a request byte, a reply byte.
    void edge() {
        if (unit->prog_strobe) driver.operation(unit->prog_addr, unit->prog_device,
                                                unit->prog_level);
        if (unit->REQUEST_VALID && unit->REQUEST_READY) {
            unsigned payload = unit->REQUEST_PAYLOAD;  // byte 0..7, first 8, last 9
            driver.request.push_back(payload & 0xffu);
            if (payload & 0x200u) driver.complete = true;
        }
        if (unit->REPLY_VALID && unit->REPLY_READY) driver.reply.pop_front();
    }
#endif

    void reset() {
        unit->uart_rx = 1;
        unit->prog_busy = 0;
#ifdef METAPLAST_XBAR
        unit->REQUEST_READY = 0;
        unit->REPLY_VALID = 0;
        unit->REPLY_PAYLOAD = 0;
#endif
        unit->rst = 1;
        for (int i = 0; i < 4; ++i) tick();
        unit->rst = 0;
        tick();
    }

    // One clock: drive uart_rx, clock, decode uart_tx as sampled after the edge.
    void step() {
        if (bits_left == 0 && !inbox.empty()) {
            shift = (unsigned(inbox.front()) << 1) | 0x200u;
            inbox.pop_front();
            bits_left = 10;
            bit_clocks = divisor;
            quiet = 0;
        }
        unit->uart_rx = bits_left ? (shift & 1u) : 1u;
#ifdef METAPLAST_XBAR
        drive_port();
#endif
        tick();
        if (bits_left && --bit_clocks == 0) {
            shift >>= 1;
            bit_clocks = divisor;
            --bits_left;
        }
        decode(unit->uart_tx);
        ++quiet;
    }

    void decode(unsigned tx) {
        if (rx_state == 0) {
            if (!tx) {
                rx_state = 1;
                rx_count = divisor / 2;
            }
            return;
        }
        if (--rx_count) return;
        rx_count = divisor;
        if (rx_state == 1) {
            rx_state = 2;
            rx_bit = 0;
            rx_byte = 0;
        } else if (rx_state == 2) {
            rx_byte |= (tx & 1u) << rx_bit;
            if (++rx_bit == 8) rx_state = 3;
        } else {
            if (tx) {
                outbox.push_back(static_cast<unsigned char>(rx_byte));
            } else {
                std::fprintf(stderr, "verilog board: stop bit missing on uart_tx\n");
            }
            rx_state = 0;
            quiet = 0;
        }
    }

    // Move what can move between the descriptor and the queues without blocking.
    void exchange() {
        if (!outbox.empty()) {
            ssize_t n = ::write(fd, outbox.data(), outbox.size());
            if (n > 0) outbox.erase(outbox.begin(), outbox.begin() + n);
        }
        unsigned char buf[4096];
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n > 0) {
            inbox.insert(inbox.end(), buf, buf + n);
        } else if (n == 0) {
            closed = true;  // a socket's peer is gone
        } else if (errno == EIO) {
            ::usleep(50000);  // a pty with no host on it: wait for one
        }
    }

    bool line_quiet() const {
#ifdef METAPLAST_XBAR
        if (!driver.idle()) return false;
#endif
        return inbox.empty() && outbox.empty() && bits_left == 0 && rx_state == 0 &&
               quiet > QUIET_BITS * divisor;
    }

    // True when one more clock with the line idle leaves every bit of the design unchanged:
    // with constant inputs it then never changes again until the host sends something.
    bool settled() {
        const auto* root = reinterpret_cast<const unsigned char*>(unit->rootp);
        std::vector<unsigned char> before(root, root + sizeof(*unit->rootp));
        step();
        return std::memcmp(before.data(), root, before.size()) == 0;
    }

    void wait_for_host() {
#ifdef METAPLAST_XBAR
        driver.flush();
        // the driver sends nothing unasked: anything on its socket is its end (hang-up)
        pollfd p[2] = {{fd, POLLIN, 0}, {driver.fd, POLLIN, 0}};
        while (::poll(p, 2, -1) < 0 && errno == EINTR) {
        }
        if (p[1].revents) Driver::gone();
#else
        pollfd p{fd, POLLIN, 0};
        while (::poll(&p, 1, -1) < 0 && errno == EINTR) {
        }
#endif
    }

    void run() {
        reset();
        long next_check = 1;
        while (!closed) {
            exchange();
            if (line_quiet()) {
                if (settled()) {
                    wait_for_host();
                    next_check = 1;
                    continue;
                }
                // still working (a long block): look again later, less often
                for (long i = 0; i < next_check && inbox.empty(); ++i) step();
                if (next_check < 4096) next_check *= 2;
                continue;
            }
            long clocks = inbox.empty() && bits_left == 0 ? 16 : POLL_EVERY;
            for (long i = 0; i < clocks; ++i) step();
        }
    }
};

}  // namespace

int main(int argc, char** argv) {
    int fd = -1;
    int divisor = 4;
    int port = -1;
    for (int i = 1; i + 1 < argc; i += 2) {
        std::string flag = argv[i];
        if (flag == "--fd") {
            fd = std::atoi(argv[i + 1]);
        } else if (flag == "--divisor") {
            divisor = std::atoi(argv[i + 1]);
        } else if (flag == "--port") {
            port = std::atoi(argv[i + 1]);
        }
    }
#ifdef METAPLAST_XBAR
    const bool usage = fd < 0 || divisor < 2 || port < 0;
    const char* flags = "--fd N [--divisor D] --port M";
#else
    const bool usage = fd < 0 || divisor < 2 || port >= 0;
    const char* flags = "--fd N [--divisor D]";
#endif
    if (usage) {
        std::fprintf(stderr, "usage: %s %s\n", argv[0], flags);
        return 2;
    }
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    Board board(fd, divisor);
#ifdef METAPLAST_XBAR
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // the driver's process gone: so is the board
    board.driver.fd = port;
#endif
    board.run();
    board.unit->final();
    return 0;
}
