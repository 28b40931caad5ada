"""100k pass-through series (10 metrics of 10k: 5 counters, 5 histograms of
10 bounds) sent to a sidecar's OTLP/HTTP port: benches/scrape_sidecar.sh."""
import sys, requests
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as ms
from opentelemetry.proto.common.v1 import common_pb2 as cp
port = int(sys.argv[1])
per = 10000
def kv(k,v): return cp.KeyValue(key=k, value=cp.AnyValue(string_value=v))
for m in range(10):
    req=ms.ExportMetricsServiceRequest()
    met=req.resource_metrics.add().scope_metrics.add().metrics.add()
    met.name=f"big.metric.{m}"; met.description="A large store's metric."
    for i in range(per):
        attrs=[kv("route",f"/api/v1/items/{i}"),kv("method","GET")]
        if m<5:
            met.sum.is_monotonic=True; met.sum.aggregation_temporality=2
            p=met.sum.data_points.add(); p.attributes.extend(attrs); p.as_int=i*7
        else:
            met.histogram.aggregation_temporality=2
            p=met.histogram.data_points.add(); p.attributes.extend(attrs); p.count=11; p.sum=i*0.5
            p.bucket_counts.extend([1]*11); p.explicit_bounds.extend([0.005,0.01,0.025,0.05,0.1,0.25,0.5,1.0,2.5,5.0])
    r=requests.post(f"http://127.0.0.1:{port}/v1/metrics",data=req.SerializeToString(),headers={"content-type":"application/x-protobuf"})
    assert r.status_code==200,(r.status_code,r.text)
