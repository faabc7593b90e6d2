# ruff: noqa
from dial.fmz import *

# Not one of FMZ's own examples: okx_private_login.py rewritten with dialkit's on_connect, so the
# login is signed afresh after every reconnect instead of re-dialling by hand.
import json
import time

accessKey = "xxx"
secretKey = "xxx"
passphrase = "xxx"
client_private = None


def login(link):
    ts = str(time.time())
    sign = exchange.HMAC("sha256", "base64", ts + "GET" + "/users/self/verify", secretKey)
    args = {"apiKey": accessKey, "passphrase": passphrase, "timestamp": ts, "sign": sign}
    link.send(json.dumps({"op": "login", "args": [args]}))
    ack = json.loads(link.recv(5))
    if ack.get("event") != "login":
        raise RuntimeError("login refused: " + json.dumps(ack))
    Log("logged in at", ts)
    link.send(
        json.dumps({"op": "subscribe", "args": [{"channel": "positions", "instType": "ANY"}]})
    )


def main():
    global client_private
    client_private = Dial(
        "wss://ws.okx.com:8443/ws/v5/private|reconnect=true&interval=200", on_connect=login
    )
    while True:
        buf = client_private.read(1000)
        if buf:
            Log(buf)


def onexit():
    client_private.close()
    Log("closed")


main()
