# ruff: noqa
from dial.fmz import *

import json

ws = None


def main():
    global ws
    param = {"sub": "market.btcusdt.detail", "id": "id1"}
    ws = Dial(
        "wss://api.huobi.pro/ws|compress=gzip&mode=recv&reconnect=true&payload=" + json.dumps(param)
    )
    if ws:
        while True:
            ret = ws.read()
            Log("ret:", ret)
            # answer the heartbeat
            try:
                jsonRet = json.loads(ret)
                if "ping" in jsonRet and type(jsonRet["ping"]) == int:
                    strPong = json.dumps({"pong": jsonRet["ping"]})
                    ws.write(strPong)
                    Log("Respond to ping, send pong:", strPong, "#FF0000")
            except Exception as e:
                Log("e:", e)
            LogStatus("Current time:", _D())
            Sleep(1000)


def onexit():
    ws.close()
    Log("Execute the ws.close() function")


main()
