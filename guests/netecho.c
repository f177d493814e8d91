/*
 * netecho: a virtio-net responder. Answers ARP requests for its IPv4
 * address, ICMP echo requests, and UDP datagrams to one port, replying with
 * a running counter followed by the request's payload. The counter is the
 * guest's state on purpose: after a migration or a failover it must carry
 * on without a gap or a repeat, which a host test can check from outside.
 * Reply format and output lines: README.md.
 *
 * One buffer per descriptor on both queues (buffer index = descriptor id),
 * completion polled; the loop runs in ring 3 (see lib/usermode.h).
 */
#include "lib/cmdline.h"
#include "lib/exit.h"
#include "lib/multiboot.h"
#include "lib/serial.h"
#include "lib/usermode.h"
#include "lib/virtio.h"

/* virtio-net (virtio 1.x spec, 5.1). Without VIRTIO_NET_F_MRG_RXBUF the
 * header still has num_buffers once VERSION_1 is negotiated: 12 bytes. */
#define VIRTIO_NET_F_MAC        5
#define VIRTIO_NET_F_STATUS     16
#define VIRTIO_NET_S_LINK_UP    1
#define NET_HDR_BYTES           12
#define CFG_MAC                 0
#define CFG_STATUS              6
#define RX_QUEUE                0
#define TX_QUEUE                1
#define QUEUE_SIZE              256
#define BUF_BYTES               2048    /* header + 1514-byte frame, rounded */

#define ETH_HLEN                14
#define ETH_P_IP                0x0800
#define ETH_P_ARP               0x0806
#define ETH_MAX_FRAME           1514
#define IP_HLEN                 20
#define IPPROTO_ICMP            1
#define IPPROTO_UDP             17
#define UDP_HLEN                8
#define COUNTER_BYTES           8
/* Largest request payload whose reply (counter + payload) fits one frame. */
#define UDP_MAX_REQUEST         (ETH_MAX_FRAME - ETH_HLEN - IP_HLEN - UDP_HLEN - COUNTER_BYTES)

/* With nothing to do, look at COM1 once per this many idle polls: each look
 * is a port read, i.e. a VM exit. */
#define SERIAL_POLL_INTERVAL    (1u << 16)

#define EXIT_PASS               0x10    /* QEMU 33 */
#define EXIT_DEVICE_ERROR       0x13    /* QEMU 39 */
#define EXIT_BAD_CMDLINE        0x14    /* QEMU 41 */

static struct {
    uint32_t ip;                /* host byte order */
    uint16_t port;
    uint64_t count;             /* 0: forever */
} cfg;

static struct virtio_dev dev;
static struct virtq rxq, txq;
static uint8_t *rxbuf, *txbuf;  /* QUEUE_SIZE buffers of BUF_BYTES each */
static uint8_t mac[6];
static int tx_pending;          /* added since the last kick */

static struct {
    uint64_t udp, arp, icmp, dropped;
} stats;

__attribute__((noreturn)) static void die(uint32_t code, const char *why)
{
    serial_puts("netecho: FAIL ");
    serial_puts(why);
    serial_putc('\n');
    guest_exit(code);
}

/* ---- byte order and checksums ---- */

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t get32(const uint8_t *p) { return (uint32_t)get16(p) << 16 | get16(p + 2); }
static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)(v >> 16)); put16(p + 2, (uint16_t)v); }

static void copy(uint8_t *d, const uint8_t *s, uint32_t n)
{
    while (n--)
        *d++ = *s++;
}

/* RFC 1071 internet checksum of n bytes. */
static uint16_t inet_csum(const uint8_t *p, uint32_t n)
{
    uint32_t sum = 0;

    for (; n > 1; p += 2, n -= 2)
        sum += get16(p);
    if (n)
        sum += (uint32_t)p[0] << 8;
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

static void put_ip(uint32_t ip)
{
    for (int i = 3; i >= 0; i--) {
        serial_put_dec(ip >> (i * 8) & 0xff);
        if (i)
            serial_putc('.');
    }
}

static void put_stats(const char *what)
{
    serial_puts("netecho: ");
    serial_puts(what);
    serial_puts(" udp ");
    serial_put_dec(stats.udp);
    serial_puts(", arp ");
    serial_put_dec(stats.arp);
    serial_puts(", icmp ");
    serial_put_dec(stats.icmp);
    serial_puts(", dropped ");
    serial_put_dec(stats.dropped);
    serial_putc('\n');
}

/* ---- transmit ---- */

static void reclaim_tx(void)
{
    int head;

    while ((head = virtq_get_used(&txq, 0)) >= 0)
        ;
    if (head == -2)
        die(EXIT_DEVICE_ERROR, "device broke the TX used ring");
}

/* A TX buffer's frame area (after the virtio-net header), waiting for room
 * if every descriptor is in flight. */
static uint8_t *tx_frame(void)
{
    int head;

    while ((head = virtq_next_head(&txq)) < 0) {
        if (tx_pending) {
            virtq_kick(&txq);
            tx_pending = 0;
        }
        reclaim_tx();
    }
    return txbuf + (uint64_t)head * BUF_BYTES + NET_HDR_BYTES;
}

/* Queues the frame tx_frame() returned; it goes out at the next kick. */
static void tx_send(uint8_t *frame, uint32_t len)
{
    uint8_t *hdr = frame - NET_HDR_BYTES;
    struct virtq_buf b;

    for (int i = 0; i < NET_HDR_BYTES; i++)
        hdr[i] = 0;             /* no checksum offload, no GSO */
    b = (struct virtq_buf){ (uintptr_t)hdr, NET_HDR_BYTES + len, 0 };
    if (virtq_add(&txq, &b, 1) < 0)
        die(EXIT_DEVICE_ERROR, "TX descriptor vanished (driver bug)");
    tx_pending = 1;
}

/* Ethernet header of a reply to the frame `req`: back to its sender. */
static void eth_reply(uint8_t *f, const uint8_t *req, uint16_t type)
{
    copy(f, req + 6, 6);
    copy(f + 6, mac, 6);
    put16(f + 12, type);
}

/* IPv4 header of a reply to `req_ip`, for `payload` bytes after it. */
static void ip_reply(uint8_t *ip, const uint8_t *req_ip, uint8_t proto, uint32_t payload)
{
    static uint16_t ident;

    ip[0] = 0x45;               /* version 4, 5 words */
    ip[1] = 0;
    put16(ip + 2, (uint16_t)(IP_HLEN + payload));
    put16(ip + 4, ident++);
    put16(ip + 6, 0x4000);      /* don't fragment */
    ip[8] = 64;                 /* TTL */
    ip[9] = proto;
    put16(ip + 10, 0);
    put32(ip + 12, cfg.ip);
    copy(ip + 16, req_ip + 12, 4);
    put16(ip + 10, inet_csum(ip, IP_HLEN));
}

/* ---- receive ---- */

static void handle_arp(const uint8_t *f, uint32_t len)
{
    const uint8_t *a = f + ETH_HLEN;
    uint8_t *r;

    /* Ethernet/IPv4 request for our address. */
    if (len < ETH_HLEN + 28 || get16(a) != 1 || get16(a + 2) != ETH_P_IP ||
        a[4] != 6 || a[5] != 4 || get16(a + 6) != 1 || get32(a + 24) != cfg.ip) {
        stats.dropped++;
        return;
    }
    r = tx_frame();
    eth_reply(r, f, ETH_P_ARP);
    copy(r + ETH_HLEN, a, 6);               /* htype, ptype, hlen, plen */
    put16(r + ETH_HLEN + 6, 2);             /* reply */
    copy(r + ETH_HLEN + 8, mac, 6);         /* sender: us */
    put32(r + ETH_HLEN + 14, cfg.ip);
    copy(r + ETH_HLEN + 18, a + 8, 10);     /* target: the asker's MAC and IP */
    tx_send(r, ETH_HLEN + 28);
    stats.arp++;
}

static void handle_icmp(const uint8_t *f, const uint8_t *ip, const uint8_t *icmp, uint32_t n)
{
    uint8_t *r, *ri;

    if (n < 8 || icmp[0] != 8 || inet_csum(icmp, n) != 0) {    /* echo request */
        stats.dropped++;
        return;
    }
    r = tx_frame();
    ri = r + ETH_HLEN;
    eth_reply(r, f, ETH_P_IP);
    ip_reply(ri, ip, IPPROTO_ICMP, n);
    copy(ri + IP_HLEN, icmp, n);
    ri[IP_HLEN] = 0;                        /* echo reply */
    put16(ri + IP_HLEN + 2, 0);
    put16(ri + IP_HLEN + 2, inet_csum(ri + IP_HLEN, n));
    tx_send(r, ETH_HLEN + IP_HLEN + n);
    stats.icmp++;
}

static void handle_udp(const uint8_t *f, const uint8_t *ip, const uint8_t *udp, uint32_t n)
{
    uint32_t payload;
    uint64_t counter;
    uint8_t *r, *ru;

    if (n < UDP_HLEN || get16(udp + 2) != cfg.port || get16(udp + 4) < UDP_HLEN ||
        get16(udp + 4) > n || get16(udp + 4) - UDP_HLEN > UDP_MAX_REQUEST) {
        stats.dropped++;
        return;
    }
    payload = get16(udp + 4) - UDP_HLEN;
    counter = ++stats.udp;
    r = tx_frame();
    ru = r + ETH_HLEN + IP_HLEN;
    eth_reply(r, f, ETH_P_IP);
    ip_reply(r + ETH_HLEN, ip, IPPROTO_UDP, UDP_HLEN + COUNTER_BYTES + payload);
    put16(ru, cfg.port);
    copy(ru + 2, udp, 2);                   /* to the sender's port */
    put16(ru + 4, (uint16_t)(UDP_HLEN + COUNTER_BYTES + payload));
    put16(ru + 6, 0);                       /* no checksum (allowed over IPv4) */
    for (int i = 0; i < COUNTER_BYTES; i++)
        ru[UDP_HLEN + i] = (uint8_t)(counter >> (8 * i));   /* little-endian */
    copy(ru + UDP_HLEN + COUNTER_BYTES, udp + UDP_HLEN, payload);
    tx_send(r, ETH_HLEN + IP_HLEN + UDP_HLEN + COUNTER_BYTES + payload);
}

static void handle_ip(const uint8_t *f, uint32_t len)
{
    const uint8_t *ip = f + ETH_HLEN;
    uint32_t ihl, total;

    if (len < ETH_HLEN + IP_HLEN || ip[0] >> 4 != 4) {
        stats.dropped++;
        return;
    }
    ihl = (ip[0] & 0xfu) * 4;
    total = get16(ip + 2);
    /* Ours, whole (no fragments), consistent lengths, good checksum. */
    if (ihl < IP_HLEN || total < ihl || ETH_HLEN + total > len || get32(ip + 16) != cfg.ip ||
        (get16(ip + 6) & 0x3fff) != 0 || inet_csum(ip, ihl) != 0) {
        stats.dropped++;
        return;
    }
    if (ip[9] == IPPROTO_UDP)
        handle_udp(f, ip, ip + ihl, total - ihl);
    else if (ip[9] == IPPROTO_ICMP)
        handle_icmp(f, ip, ip + ihl, total - ihl);
    else
        stats.dropped++;
}

static void handle_frame(const uint8_t *f, uint32_t len)
{
    if (len < ETH_HLEN) {
        stats.dropped++;
        return;
    }
    switch (get16(f + 12)) {
    case ETH_P_ARP:
        handle_arp(f, len);
        break;
    case ETH_P_IP:
        handle_ip(f, len);
        break;
    default:
        stats.dropped++;
    }
}

static void rx_refill(void)
{
    int head;

    while ((head = virtq_next_head(&rxq)) >= 0) {
        struct virtq_buf b = { (uintptr_t)(rxbuf + (uint64_t)head * BUF_BYTES), BUF_BYTES, 1 };

        virtq_add(&rxq, &b, 1);
    }
}

/* Sends everything queued and waits until the device has taken it all. */
static void drain_tx(void)
{
    if (tx_pending) {
        virtq_kick(&txq);
        tx_pending = 0;
    }
    while (txq.num_free != txq.size)
        reclaim_tx();
}

/* ---- ring 3 from here on ---- */

static void run(void *unused)
{
    uint32_t idle = 0;

    (void)unused;
    for (;;) {
        uint32_t len;
        int head, got = 0;

        while ((head = virtq_get_used(&rxq, &len)) >= 0) {
            got = 1;
            if (len > NET_HDR_BYTES && len <= BUF_BYTES)
                handle_frame(rxbuf + (uint64_t)head * BUF_BYTES + NET_HDR_BYTES, len - NET_HDR_BYTES);
            else
                stats.dropped++;
        }
        if (head == -2)
            die(EXIT_DEVICE_ERROR, "device broke the RX used ring");
        if (got) {
            rx_refill();
            virtq_kick(&rxq);
            if (tx_pending) {
                virtq_kick(&txq);
                tx_pending = 0;
            }
            virtio_ack_interrupt(&dev);
            idle = 0;
            if (cfg.count && stats.udp >= cfg.count) {
                drain_tx();
                put_stats("done:");
                guest_exit(EXIT_PASS);
            }
        }
        reclaim_tx();
        if (++idle % SERIAL_POLL_INTERVAL == 0) {
            switch (serial_try_getc()) {
            case 'p':
                put_stats("stats:");
                break;
            case 'q':
                drain_tx();
                put_stats("quit:");
                guest_exit(EXIT_PASS);
            }
            if (virtio_status(&dev) & VIRTIO_STATUS_NEEDS_RESET)
                die(EXIT_DEVICE_ERROR, "device set DEVICE_NEEDS_RESET");
        }
    }
}

static void setup(void *unused)
{
    (void)unused;
    if (virtio_find(VIRTIO_ID_NET, &dev))
        die(EXIT_DEVICE_ERROR, "no usable virtio-net device");
    if (virtio_negotiate(&dev, (1ULL << VIRTIO_NET_F_MAC) | (1ULL << VIRTIO_NET_F_STATUS)))
        die(EXIT_DEVICE_ERROR, "feature negotiation");
    if (virtq_setup(&dev, &rxq, RX_QUEUE, QUEUE_SIZE) || virtq_setup(&dev, &txq, TX_QUEUE, QUEUE_SIZE))
        die(EXIT_DEVICE_ERROR, "queue setup");
    rxbuf = virtio_alloc((uint64_t)rxq.size * BUF_BYTES, 4096);
    txbuf = virtio_alloc((uint64_t)txq.size * BUF_BYTES, 4096);
    if (!rxbuf || !txbuf)
        die(EXIT_DEVICE_ERROR, "buffers do not fit the DMA area");

    if (dev.features & (1ULL << VIRTIO_NET_F_MAC)) {
        for (int i = 0; i < 6; i++)
            mac[i] = virtio_config8(&dev, CFG_MAC + i);
    } else {
        /* Locally administered, QEMU's default OUI otherwise. */
        static const uint8_t fallback[6] = { 0x52, 0x54, 0x00, 0x12, 0x34, 0x56 };
        copy(mac, fallback, 6);
    }
    rx_refill();
    virtio_driver_ok(&dev);
    virtq_kick(&rxq);

    serial_puts("netecho: slot=");
    serial_put_dec(dev.slot);
    serial_puts(" mac=");
    for (int i = 0; i < 6; i++) {
        serial_putc("0123456789abcdef"[mac[i] >> 4]);
        serial_putc("0123456789abcdef"[mac[i] & 15]);
        if (i < 5)
            serial_putc(':');
    }
    serial_puts(" ip=");
    put_ip(cfg.ip);
    serial_puts(" port=");
    serial_put_dec(cfg.port);
    serial_puts(" link=");
    if (dev.features & (1ULL << VIRTIO_NET_F_STATUS))
        serial_puts(virtio_config16(&dev, CFG_STATUS) & VIRTIO_NET_S_LINK_UP ? "up" : "down");
    else
        serial_puts("unknown");
    serial_puts(" queues=");
    serial_put_dec(rxq.size);
    serial_putc('/');
    serial_put_dec(txq.size);
    serial_puts("\nnetecho: ready\n");
    run(0);
}

/* ---- ring 0 ---- */

__attribute__((noreturn)) static void bad_cmdline(const char *why)
{
    serial_puts("netecho: bad command line: ");
    serial_puts(why);
    serial_putc('\n');
    guest_exit(EXIT_BAD_CMDLINE);
}

/* Dotted quad "a.b.c.d" up to a space or the end; 0 if malformed. */
static int parse_ip(const char *p, uint32_t *ip)
{
    uint32_t v = 0;

    for (int part = 0; part < 4; part++) {
        uint32_t n = 0;
        int digits = 0;

        while (*p >= '0' && *p <= '9' && digits < 4)
            n = n * 10 + (uint32_t)(*p++ - '0'), digits++;
        if (!digits || n > 255 || (part < 3 ? *p++ != '.' : (*p && *p != ' ')))
            return 0;
        v = v << 8 | n;
    }
    *ip = v;
    return 1;
}

void kmain(uint32_t magic, uint32_t mbi)
{
    const struct multiboot_info *mi = multiboot_info(mbi);
    const char *cmd, *ip;
    uint64_t port;

    serial_init();
    if (magic != MULTIBOOT_BOOTLOADER_MAGIC || !(mi->flags & MULTIBOOT_INFO_MEMORY))
        bad_cmdline("not booted by a multiboot loader with memory info");
    cmd = multiboot_cmdline(mbi);
    ip = cmdline_find(cmd, "ip");
    cfg.ip = 0x0a00020f;            /* 10.0.2.15, QEMU's user-net guest address */
    if (ip && !parse_ip(ip, &cfg.ip))
        bad_cmdline("ip= must be a dotted quad like 10.0.2.15");
    port = cmdline_get_num(cmd, "port", 7);
    if (!port || port > 0xffff)
        bad_cmdline("port= must be 1 to 65535");
    cfg.port = (uint16_t)port;
    cfg.count = cmdline_get_num(cmd, "count", 0);
    if (virtio_mem_init(0x100000 + (uint64_t)mi->mem_upper * 1024))
        bad_cmdline("too little RAM");

    usermode_init();
    usermode_enter(setup, 0);
}
