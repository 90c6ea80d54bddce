#!/bin/sh
# Start Mosquitto and send it SIGHUP whenever the registry-generated auth files change, so a
# device added, rotated or revoked applies without dropping connected devices.
mosquitto -c /mosquitto/config/mosquitto.conf &
pid=$!
last=""
while kill -0 "$pid" 2>/dev/null; do
  current=$(cat /citystream/mosquitto/passwd /citystream/mosquitto/acl 2>/dev/null | md5sum)
  if [ -n "$last" ] && [ "$current" != "$last" ]; then
    kill -HUP "$pid"
  fi
  last=$current
  sleep 5
done
wait "$pid"
