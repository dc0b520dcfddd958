#!/bin/sh
# Container entrypoint of the API and the workers: builds ODESERVE_REDIS_URL from the Redis
# password secret, turns API keys on when the api_keys secret has a key (and warns loudly when
# it does not), then runs the command. Runs as the image's non-root user.
set -eu

if [ -n "${REDIS_PASSWORD_FILE:-}" ]; then
    if [ ! -r "$REDIS_PASSWORD_FILE" ]; then
        echo "error: cannot read the Redis password at $REDIS_PASSWORD_FILE as $(id -un)" \
             "(run 'make secrets'; the files need mode 0444)" >&2
        exit 1
    fi
    ODESERVE_REDIS_URL="redis://:$(cat "$REDIS_PASSWORD_FILE")@${REDIS_ADDRESS:-redis:6379/0}"
    export ODESERVE_REDIS_URL
fi

if [ -n "${API_KEYS_SECRET:-}" ]; then
    if [ -e "$API_KEYS_SECRET" ] && [ ! -r "$API_KEYS_SECRET" ]; then
        echo "error: cannot read the API keys at $API_KEYS_SECRET as $(id -un) (chmod 0444 secrets/api_keys)" >&2
        exit 1
    fi
    if [ -s "$API_KEYS_SECRET" ] && grep -q '[^[:space:]]' "$API_KEYS_SECRET"; then
        export ODESERVE_API_KEYS_FILE="$API_KEYS_SECRET"
    else
        echo "WARNING ********************************************************************" >&2
        echo "WARNING  odeserve API keys are OFF: secrets/api_keys is empty. Anyone who can"  >&2
        echo "WARNING  reach this port can submit jobs and read every result. Put one key"    >&2
        echo "WARNING  per line in secrets/api_keys and restart to turn authentication on."   >&2
        echo "WARNING ********************************************************************" >&2
    fi
fi

exec "$@"
