DROP TABLE run_requests;
DROP TABLE api_rate_windows;
DROP TABLE api_keys;
