#!/bin/sh
# Random tokens for docker/compose.yaml, in docker/secrets/ (git-ignored). Existing files are kept.
set -eu
dir="$(dirname "$0")/secrets"
mkdir -p "$dir"
umask 077
tok() { python3 -c 'import secrets; print(secrets.token_urlsafe(32))'; }
[ -s "$dir/agent_token" ] || tok > "$dir/agent_token"
[ -s "$dir/agent_read_token" ] || tok > "$dir/agent_read_token"
if [ ! -s "$dir/login_tokens" ]; then
  {
    echo "# TOKEN role=read|operator [actions=inspect,kill,suspend,send,chaos] [name=LABEL]"
    echo "$(tok) role=operator name=admin"
    echo "$(tok) role=read name=viewer"
  } > "$dir/login_tokens"
fi
echo "tokens in $dir; log in with: $(grep -v '^#' "$dir/login_tokens" | head -1 | cut -d' ' -f1)"
