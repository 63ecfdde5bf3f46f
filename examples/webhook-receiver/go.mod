module example.com/claimcheck-examples/webhook-receiver

go 1.26.8
