# ruff: noqa
from dial.fmz import *

import json
import time

ws = None


def main():
    global ws
    param = {"op": "subscribe", "args": [{"channel": "tickers", "instId": "BTC-USDT"}]}
    ws = Dial(
        "wss://ws.okx.com:8443/ws/v5/public|compress=gzip_raw&mode=recv&reconnect=true&payload="
        + json.dumps(param)
    )
    if ws:
        pingCyc = 1000 * 20
        lastPingTime = time.time() * 1000
        while True:
            nowTime = time.time() * 1000
            ret = ws.read()
            Log("ret:", ret)
            if nowTime - lastPingTime > pingCyc:
                retPing = ws.write("ping")
                lastPingTime = nowTime
                Log("Send: ping", "#FF0000")
            LogStatus("Current time:", _D())
            Sleep(1000)


def onexit():
    ws.close()
    Log("exit")


main()
