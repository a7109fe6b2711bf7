"""An asyncio server on uvloop (whose libuv makes an io_uring instance for its loop, to batch
its epoll changes), checkpointed from inside a coroutine.
    python uvloop_server.py IMAGE KEY     # first life: serve, tick, checkpoint, exit 0
    thaw run --trust k.pub IMAGE          # second life: the listener answers, the ticker goes
                                          # on, a new server listens and answers"""
import asyncio
import sys

import thaw
import uvloop


async def handle(reader, writer):
    line = await reader.readline()
    writer.write(b"pong " + line)
    await writer.drain()
    writer.close()


async def ask(port, what):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(what + b"\n")
    await writer.drain()
    answer = (await reader.readline()).decode().strip()
    writer.close()
    return answer


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ticks = []

    async def ticker():
        while True:
            await asyncio.sleep(0.001)
            ticks.append(1)

    task = asyncio.create_task(ticker())
    while len(ticks) < 5:
        await asyncio.sleep(0.001)
    thaw.checkpoint(sys.argv[1], key=sys.argv[2], exit_after_save=True)
    seen = len(ticks)
    print("listener", await ask(port, b"hello"))
    while len(ticks) <= seen:
        await asyncio.sleep(0.001)
    print("ticker goes on")
    again = await asyncio.start_server(handle, "127.0.0.1", 0)
    print("new server", await ask(again.sockets[0].getsockname()[1], b"again"))
    print("loop", type(asyncio.get_running_loop()).__module__)
    task.cancel()


uvloop.run(main())
