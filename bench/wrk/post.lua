-- POST a 64 KiB body on every request (the echo_len app answers with its length).
--   wrk -t1 -c64 -d5s -s bench/wrk/post.lua http://127.0.0.1:8000/
wrk.method = "POST"
wrk.body = string.rep("x", 65536)
wrk.headers["Content-Type"] = "application/octet-stream"
